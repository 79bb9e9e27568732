"""What the engine refuses to embed, and why: typed, so that the HTTP layer maps each kind to a status in one place."""

from __future__ import annotations


class EmbeddingRejected(Exception):
    """A request the engine will not embed; the message is written for the client."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidInput(EmbeddingRejected):
    """The request itself is wrong: an input, a parameter, a limit."""


class ModelNotServed(EmbeddingRejected):
    """The request names a model this server does not serve."""

    def __init__(self, model: str, served: tuple[str, ...]):
        super().__init__(
            f"The model `{model}` does not exist or is not served here; served: {', '.join(served)}",
            param="model",
            code="model_not_found",
        )
