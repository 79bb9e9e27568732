"""Every architecture family of the model zoo on every backend: tiny random-weight models saved like their real
repositories, checked against sentence-transformers' own output for the same saved model (pooling, Dense
layers, prompts, truncation), and batched against single."""

from __future__ import annotations

import io

import numpy as np
import pytest

from corpus.texts import varied_texts
from server.engine.embedder import Embedder
from server.settings import EngineSettings
from tests.helpers import export_in_this_process
from tests.server.tiny_models import FAMILIES, HIDDEN, MAX_SEQ_LENGTH, build_tiny_model

pytestmark = pytest.mark.slow
BACKENDS = ["torch", "onnx", "openvino"]
# Single words to 400-word passages: the long ones pass MAX_SEQ_LENGTH, so truncation is compared too.
TEXTS = varied_texts(16, seed=5)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, minilm_dir) -> dict:
    root = tmp_path_factory.mktemp("zoo")
    return {key: build_tiny_model(family, root / key, minilm_dir) for key, family in FAMILIES.items()}


@pytest.fixture(scope="module")
def zoo_cache(zoo, image_text, tmp_path_factory):
    """Every model of the zoo exported for ONNX Runtime and OpenVINO, shared by the tests that read them."""
    models = [*zoo.values(), *image_text["models"].values()]
    return export_in_this_process(models, tmp_path_factory.mktemp("zoo-exports"))


@pytest.fixture(scope="module")
def references(zoo) -> dict:
    """sentence-transformers' embeddings of TEXTS per family and input type, from the saved files alone."""
    from sentence_transformers import SentenceTransformer

    out = {}
    for key, path in zoo.items():
        model = SentenceTransformer(str(path), device="cpu")
        for input_type in (None, "query", "document"):
            prompt = input_type if model.prompts.get(input_type) else None
            out[key, input_type] = model.encode(TEXTS, prompt_name=prompt, convert_to_numpy=True)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_sentence_transformers(zoo, zoo_cache, references, family, backend):
    embedder = Embedder(EngineSettings(model=str(zoo[family]), cache=zoo_cache), backend)
    spec = embedder.spec
    expected = FAMILIES[family]
    assert spec.pooling == {"lasttoken": "last"}.get(expected.pooling, expected.pooling)
    assert spec.dimensions == (expected.dense[-1][1] if expected.dense else HIDDEN)
    assert spec.max_tokens == MAX_SEQ_LENGTH and spec.prompts == {k: v for k, v in expected.prompts.items() if v}
    assert spec.padding_side == ("left" if expected.pooling == "lasttoken" else "right")
    assert len(spec.dense_layers) == len(expected.dense)

    for input_type in (None, "query", "document"):
        encoded = embedder.embed_texts(TEXTS, input_type)
        batched = encoded.dense
        reference = references[family, input_type]
        assert batched.shape == reference.shape
        assert (batched * reference).sum(axis=1).min() >= 0.9999, (family, backend, input_type)
        single = np.stack([embedder.embed_texts([text], input_type).dense[0] for text in TEXTS])
        assert (batched * single).sum(axis=1).min() >= 0.9999, "batched and single results differ"
    longest_pass = max(p.padded_tokens // p.inputs for p in encoded.stats.forward_passes)
    assert longest_pass <= MAX_SEQ_LENGTH, "over-long inputs are truncated to the limit"
    # A degenerate model (every text the same vector) would pass the checks above trivially.
    similarity = batched @ batched.T
    assert similarity[~np.eye(len(TEXTS), dtype=bool)].min() < 0.99


# The special tokens each family's real tokenizer puts around a text, by their strings in its vocabulary.
FRAMES = {
    "bert": (["[CLS]"], ["[SEP]"]),
    "gemma3": (["<bos>"], ["<eos>"]),
    "qwen3": ([], ["<|endoftext|>"]),  # last-token pooling reads it: without it, the wrong token is pooled
    "xlm-roberta": (["<s>"], ["</s>"]),
    "modernbert": (["[CLS]"], ["[SEP]"]),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_tokenizes_as_transformers_with_its_own_special_tokens(zoo, family):
    """Our tokenizer of the family's files against transformers' tokenizer class named in them: the same ids,
    truncation, frame and pad id (the truth for the parity test above is sentence-transformers on the same files)."""
    from transformers import AutoTokenizer

    from server.engine.tokenization import TextTokenizer

    ours = TextTokenizer(zoo[family], MAX_SEQ_LENGTH)
    theirs = AutoTokenizer.from_pretrained(zoo[family])
    ids = ours.tokenize(TEXTS).ids
    assert ids == theirs(TEXTS, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    prefix, suffix = ([theirs.convert_tokens_to_ids(token) for token in tokens] for tokens in FRAMES[family])
    for row in ids:
        assert row[: len(prefix)] == prefix and row[len(row) - len(suffix) :] == suffix, row
    assert ours.pad_id == theirs.pad_token_id and theirs.pad_token_id is not None
    framed = ours.frame_token_ids([theirs("a text", add_special_tokens=False)["input_ids"]]).ids[0]
    assert framed == theirs("a text")["input_ids"], "client token ids get the text's frame"
    if family != "bert":  # its own vocabulary, not MiniLM's WordPiece
        assert theirs.convert_tokens_to_ids("[unused0]") in (None, theirs.unk_token_id)


def test_prompts_change_the_embedding(zoo, zoo_cache):
    embedder = Embedder(EngineSettings(model=str(zoo["modernbert"]), cache=zoo_cache), "torch")
    plain, query = embedder.embed_texts(TEXTS[:4]).dense, embedder.embed_texts(TEXTS[:4], "query").dense
    assert (plain * query).sum(axis=1).max() < 0.9999


@pytest.mark.parametrize("backend", BACKENDS)
def test_bge_m3_sparse_lexical_weights_match_the_flagembedding_formula(zoo, zoo_cache, backend):
    """ReLU(sparse_linear(hidden)) per token, special tokens dropped, largest weight per repeated token; computed
    here independently with transformers and torch, one text at a time (no padding)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = zoo["xlm-roberta"]
    embedder = Embedder(EngineSettings(model=str(path), cache=zoo_cache), backend)
    ids = embedder.tokenize_texts(TEXTS).ids
    encoded = embedder.embed_token_ids(ids, sparse=True)
    assert np.allclose(encoded.dense, embedder.embed_token_ids(ids).dense, atol=1e-6)

    model = AutoModel.from_pretrained(path).eval()
    head = torch.load(path / "sparse_linear.pt")
    special = set(AutoTokenizer.from_pretrained(path).all_special_ids)
    for row, token_ids in zip(encoded.sparse, ids, strict=True):
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([token_ids])).last_hidden_state[0]
        weights = torch.relu(hidden @ head["weight"].T + head["bias"]).squeeze(-1).tolist()
        expected: dict[int, float] = {}
        for token, weight in zip(token_ids, weights, strict=True):
            if token not in special and weight > expected.get(token, 0.0):
                expected[token] = weight
        assert row.keys() == expected.keys()
        assert np.allclose([row[t] for t in expected], list(expected.values()), rtol=1e-3, atol=1e-5)
    assert any(encoded.sparse), "a sparse head that zeroes everything would pass trivially"


def test_sparse_and_dense_requests_served_together(zoo, zoo_cache, tmp_path):
    """encoding_format "sparse" through HTTP, sent at once with dense requests (and one bad request) to one
    backend's queue. The batch waits (up to 30 s) until it holds all seven, so that it mixes them whatever the
    machine's speed: one forward pass serves both kinds, and the bad one is refused alone."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from loadtest.probe.metrics_scrape import MetricsSnapshot
    from tests.helpers import start_server

    path = zoo["xlm-roberta"]
    server = start_server(
        zoo_cache,
        tmp_path,
        *("--model", str(path), "--backends", "onnx"),
        *("--max-batch-requests", "7", "--batch-timeout-ms", "30000"),
    )
    try:

        def post(body: dict) -> requests.Response:
            return requests.post(f"{server.url}/v1/embeddings", json={"model": str(path), **body}, timeout=60)

        bodies = [{"input": TEXTS[:3], "encoding_format": kind} for kind in ["sparse", "float"] * 3]
        both = {"input": "x", "encoding_format": "sparse", "dimensions": 8}
        with ThreadPoolExecutor(7) as pool:
            *answers, refused = pool.map(post, [*bodies, both])
        replies = [answer.json() for answer in answers]
        metrics = MetricsSnapshot.scrape(server.url)
        assert metrics.total("embedserve_batch_requests_count") == 1, "the requests formed one batch"
        assert metrics.total("embedserve_batch_requests_sum") == 6  # the six valid ones
    finally:
        server.stop()
    embedder = Embedder(EngineSettings(model=str(path), cache=zoo_cache), "onnx")
    expected = embedder.embed_token_ids(embedder.tokenize_texts(TEXTS[:3]).ids, sparse=True)
    for reply in replies[0::2]:
        assert [item["object"] for item in reply["data"]] == ["sparse_embedding"] * 3
        for item, row in zip(reply["data"], expected.sparse, strict=True):
            assert item["embedding"]["indices"] == sorted(row)
            assert np.allclose(item["embedding"]["values"], [row[t] for t in sorted(row)], rtol=1e-4)
    for reply in replies[1::2]:
        assert np.allclose([item["embedding"] for item in reply["data"]], expected.dense, atol=1e-5)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"
    assert "does not apply to sparse" in refused.json()["error"]["message"]


def test_input_type_over_http_picks_the_models_prompt(zoo, zoo_cache, references, tmp_path):
    """The same prompts as sentence-transformers' prompt_name, through the API; the prompt counts in usage."""
    import requests

    from tests.helpers import start_server

    path = zoo["modernbert"]
    server = start_server(zoo_cache, tmp_path, "--model", str(path), "--backends", "onnx")
    try:
        replies = {
            input_type: requests.post(
                f"{server.url}/v1/embeddings",
                json={"model": str(path), "input": TEXTS[:4], "input_type": input_type},
                timeout=60,
            ).json()
            for input_type in (None, "query", "document")
        }
    finally:
        server.stop()
    for input_type, reply in replies.items():
        vectors = np.array([item["embedding"] for item in reply["data"]])
        reference = references["modernbert", input_type][:4]
        assert (vectors * reference).sum(axis=1).min() >= 0.9999, input_type
    assert replies["query"]["usage"]["prompt_tokens"] > replies[None]["usage"]["prompt_tokens"]


# A model that ships its own modelling code, as JinaBERT does: its config.json maps AutoModel to a module beside the
# weights. This one negates BERT's hidden states, so an embedding shows whether that code ran.
NEGATED_BERT_CONFIG = """from transformers import BertConfig


class NegatedBertConfig(BertConfig):
    model_type = "bert"
"""
NEGATED_BERT_MODEL = """from transformers import BertModel

from .configuration_negated_bert import NegatedBertConfig


class NegatedBertModel(BertModel):
    config_class = NegatedBertConfig

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        output = super().forward(input_ids, attention_mask, token_type_ids, **kwargs)
        if isinstance(output, tuple):
            return (-output[0], *output[1:])
        output.last_hidden_state = -output.last_hidden_state
        return output
"""


@pytest.fixture(scope="module")
def custom_code_model(zoo, tmp_path_factory):
    import json
    import shutil

    path = tmp_path_factory.mktemp("custom-code") / "negated-bert"
    shutil.copytree(zoo["bert"], path)
    (path / "configuration_negated_bert.py").write_text(NEGATED_BERT_CONFIG)
    (path / "modeling_negated_bert.py").write_text(NEGATED_BERT_MODEL)
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_negated_bert.NegatedBertConfig",
        "AutoModel": "modeling_negated_bert.NegatedBertModel",
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_model_with_its_own_code_is_refused_without_consent(custom_code_model, zoo_cache):
    for backend in ("torch", "onnx", "openvino"):
        with pytest.raises(PermissionError, match="--trust-remote-code"):
            Embedder(EngineSettings(model=str(custom_code_model), cache=zoo_cache), backend)


def test_a_model_with_its_own_code_is_served_through_auto_export_with_the_flag(
    custom_code_model, zoo_cache, references, tmp_path
):
    """`--trust-remote-code` alone, and the export children the server starts get the flag as they parse it: ONNX
    Runtime and OpenVINO then run the model's own code, exported, as torch runs it."""
    import requests

    from tests.helpers import start_server

    model = str(custom_code_model)
    backends = ("torch", "onnx", "openvino")
    server = start_server(
        zoo_cache, tmp_path, "--model", model, "--backends", ",".join(backends), "--trust-remote-code"
    )
    try:
        replies = {
            backend: requests.post(
                f"{server.url}/{backend}/v1/embeddings", json={"model": model, "input": TEXTS[:4]}, timeout=60
            ).json()
            for backend in backends
        }
    finally:
        server.stop()
    plain_bert = references["bert", None][:4]
    for backend, reply in replies.items():
        vectors = np.array([item["embedding"] for item in reply["data"]])
        assert (vectors * -plain_bert).sum(axis=1).min() >= 0.9999, f"{backend} did not run the model's own code"


# --- image-text models (CLIP, SigLIP) ----------------------------------------------------------------------------
def picture(kind: int) -> bytes:
    """Distinct, structured images (gradients, stripes, blocks), so that their embeddings differ."""
    from PIL import Image

    y, x = np.mgrid[0:180, 0:260]
    channels = [(x * (kind + 1)) % 256, (y * (3 - kind % 3)) % 256, ((x // (8 * (kind + 1)) + y // 16) % 2) * 255]
    buffer = io.BytesIO()
    Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_text(tmp_path_factory, minilm_dir) -> dict:
    """Tiny CLIP and SigLIP, and a user registry entry that gives SigLIP its max-length text padding."""
    from tests.server.tiny_models import IMAGE_TEXT, build_tiny_image_text_model

    root = tmp_path_factory.mktemp("image-text")
    models = {kind: build_tiny_image_text_model(kind, root / kind, minilm_dir) for kind in IMAGE_TEXT}
    registry = root / "registry.yaml"
    registry.write_text(f"{models['siglip']}:\n  family: siglip\n  text_padding: max_length\n")
    return {"models": models, "registry": registry}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_image_text_towers_match_transformers(image_text, zoo_cache, kind, backend):
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    path = image_text["models"][kind]
    settings = EngineSettings(model=str(path), model_registry=image_text["registry"], cache=zoo_cache)
    embedder = Embedder(settings, backend)
    images = [picture(k) for k in range(3)]
    texts = embedder.embed_texts(TEXTS[:8]).dense
    pictures = embedder.embed_images([embedder.image_processing(data) for data in images]).dense

    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    processor = AutoImageProcessor.from_pretrained(path)
    with torch.no_grad():
        if kind == "siglip":  # as SigLIP was trained: padded to 64 tokens, no attention mask
            encoded = tokenizer(TEXTS[:8], padding="max_length", max_length=64, truncation=True, return_tensors="pt")
            expected_texts = model.get_text_features(input_ids=encoded["input_ids"])
        else:
            encoded = tokenizer(TEXTS[:8], padding=True, truncation=True, max_length=77, return_tensors="pt")
            expected_texts = model.get_text_features(**{k: encoded[k] for k in ("input_ids", "attention_mask")})
        pixels = processor(images=[Image.open(io.BytesIO(d)) for d in images], return_tensors="pt")["pixel_values"]
        expected_images = model.get_image_features(pixel_values=pixels)
    unit = lambda t: (t / t.norm(dim=-1, keepdim=True)).numpy()  # noqa: E731
    assert (texts * unit(expected_texts)).sum(axis=1).min() >= 0.9999
    assert (pictures * unit(expected_images)).sum(axis=1).min() >= 0.9999
    assert texts.shape[1] == pictures.shape[1] == embedder.spec.dimensions
    single = np.stack([embedder.embed_texts([text]).dense[0] for text in TEXTS[:8]])
    assert (texts * single).sum(axis=1).min() >= 0.9999, "batched and single results differ"
    assert (pictures @ pictures.T)[~np.eye(3, dtype=bool)].min() < 0.99, "distinct images, distinct embeddings"


@pytest.fixture
def image_files(tmp_path):
    """A local HTTP server on 127.0.0.1 with a picture, an image past the byte limit, and a missing path."""
    import functools
    import http.server
    import threading

    from server.engine.images import MAX_IMAGE_BYTES

    (tmp_path / "picture.png").write_bytes(picture(2))
    (tmp_path / "huge.png").write_bytes(picture(2) + b"\0" * MAX_IMAGE_BYTES)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def bomb() -> bytes:
    """A PNG of 8000 x 8000 pixels (64 M, past the 50 M limit) that is a few kB on the wire."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_urls_and_the_image_limits(image_text, image_files, tmp_path):
    import base64

    import requests

    from tests.helpers import start_server

    path = image_text["models"]["clip"]
    server = start_server(tmp_path, tmp_path, "--model", str(path), "--backends", "torch", "--allow-image-urls")
    post = lambda inputs: requests.post(  # noqa: E731
        f"{server.url}/v1/embeddings", json={"model": str(path), "input": inputs}, timeout=60
    )
    try:
        fetched = post([f"{image_files}/picture.png", "data:image/png;base64," + base64.b64encode(picture(2)).decode()])
        answers = {
            "huge": post([f"{image_files}/huge.png"]),
            "missing": post(["a text", f"{image_files}/missing.png"]),
            "bomb": post(["data:image/png;base64," + base64.b64encode(bomb()).decode()]),
        }
    finally:
        server.stop()
    by_url, by_data = (item["embedding"] for item in fetched.json()["data"])
    assert np.allclose(by_url, by_data, atol=1e-6)
    errors = {name: answer.json()["error"] for name, answer in answers.items()}
    assert {answer.status_code for answer in answers.values()} == {400}
    assert errors["huge"]["message"] == "input[0]: the image is larger than 20971520 bytes"
    assert errors["missing"]["message"].startswith("input[1]: the image URL could not be fetched")
    assert errors["bomb"]["message"] == "input[0]: the image has more than 50000000 pixels"
    assert {error["code"] for error in errors.values()} == {"invalid_image"}


def test_mixed_text_and_image_request_and_bad_images(image_text, tmp_path):
    import base64

    import requests

    from tests.helpers import start_server

    path = image_text["models"]["clip"]
    uri = lambda data: "data:image/png;base64," + base64.b64encode(data).decode()  # noqa: E731
    server = start_server(tmp_path, tmp_path, "--model", str(path), "--backends", "torch")
    try:
        url = f"{server.url}/v1/embeddings"
        mixed = ["a photo of stripes", uri(picture(0)), "a gradient", uri(picture(1))]
        reply = requests.post(url, json={"model": str(path), "input": mixed}, timeout=60).json()
        bad = requests.post(
            url, json={"model": str(path), "input": ["ok", "data:image/png;base64,bm9wZQ=="]}, timeout=60
        )
    finally:
        server.stop()
    vectors = np.array([item["embedding"] for item in reply["data"]])
    embedder = Embedder(EngineSettings(model=str(path)), "torch")
    expected_texts = embedder.embed_texts([mixed[0], mixed[2]]).dense
    expected_images = embedder.embed_images([embedder.image_processing(picture(k)) for k in (0, 1)]).dense
    assert np.allclose(vectors[[0, 2]], expected_texts, atol=1e-5) and np.allclose(
        vectors[[1, 3]], expected_images, atol=1e-5
    )
    assert reply["usage"]["prompt_tokens"] == sum(len(ids) for ids in embedder.tokenize_texts([mixed[0], mixed[2]]).ids)
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["message"].startswith("input[1]: the image could not be decoded") and error["code"] == "invalid_image"
