"""The HTTP layer: the OpenAI contract (schemas, errors), one LitAPI per backend, admission, status and metrics
routes, and the LitServer that holds them. It calls the engine; nothing below it calls back."""
