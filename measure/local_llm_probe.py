"""Probe the embedded local chat model: how often is its structured answer valid, how fast?

Runs N structured loss-weight decisions (default 20) against the local SmolLM2 server
through LangChain's `ChatOpenAI.with_structured_output`, with a prompt shaped like the
LLM agent's (system: role, objective, loss repository; user: a history table; then the
request), and prints one `key: value` line per result (see :func:`run_probe`), such as
`format_success_rate` (answers that parsed into the schema), `json_valid_rate` (tool-call
arguments that were valid JSON) and `median_latency_s` (of one decision)::

    python -m measure.local_llm_probe [--n 20] [--method function_calling]
        [--chat-format chatml-function-calling|chatml|none] [--stock-grammar] [--threads N] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Any, Literal, get_args

import numpy as np
from pydantic import Field, SecretStr, create_model

from lossagent_env.chat.local import DEFAULT_CHAT_FORMAT, LOCAL_API_KEY, LocalLLMServer

logger = logging.getLogger(__name__)

Method = Literal["function_calling", "json_schema", "json_mode"]
"""The ``with_structured_output`` methods the probe can use."""

LOSSES: dict[str, str] = {
    "l1": "mean absolute pixel error; stable, favours PSNR, can look slightly blurry",
    "ssim": "1 - structural similarity; preserves local structure and contrast",
    "fft": "L1 distance of Fourier spectra; recovers high frequencies and fine texture",
    "gradient": "L1 distance of image gradients; sharpens edges, may add ringing",
    "charbonnier": "smooth L1 (sqrt(x^2 + eps^2)); robust to outliers, favours PSNR",
}


_WEIGHTS: dict[str, Any] = {
    name: (float, Field(ge=0.0, le=1.0, description=f"Weight of {name} in [0, 1]: {text}"))
    for name, text in LOSSES.items()
}
LossWeights = create_model(
    "LossWeights",
    __doc__="Weights for the next training stage, one per loss, and the reason for them.",
    **_WEIGHTS,
    rationale=(str, Field(max_length=200, description="One short sentence explaining the choice.")),
)


SYSTEM_PROMPT = (
    "You choose the loss weights for training an image restoration network "
    "(4x super-resolution). Training runs in stages; before each stage you give every "
    "loss a weight between 0 and 1, the network trains with the weighted sum, and then "
    "the objective is measured. Objective: maximise PSNR on the validation images "
    "(higher is better).\n\nLoss repository:\n"
    + "\n".join(f"- {name}: {text}" for name, text in LOSSES.items())
)


def history_prompt(rng: np.random.Generator, n_stages: int) -> str:
    """A plausible history table of `n_stages` past stages."""
    names = list(LOSSES)
    lines = ["stage | " + " | ".join(names) + " | psnr | reward"]
    psnr = float(rng.uniform(22.0, 25.0))
    for stage in range(n_stages):
        w = np.round(rng.uniform(0, 1, len(names)), 2)
        gain = float(rng.normal(0.3, 0.25))
        psnr += gain
        lines.append(f"{stage} | " + " | ".join(f"{x:.2f}" for x in w) + f" | {psnr:.2f} | {gain:+.2f}")
    if n_stages == 0:
        lines.append("(no stage trained yet)")
    return (
        "History of the stages so far (weights -> PSNR in dB, reward = PSNR gain):\n"
        + "\n".join(lines)
        + f"\n\nChoose the weights for stage {n_stages} (each between 0 and 1) and give a "
        "one-sentence rationale."
    )


def run_probe(
    n: int = 20,
    method: Method = "function_calling",
    chat_format: str | None = DEFAULT_CHAT_FORMAT,
    threads: int | None = None,
    seed: int = 0,
    bounded_numbers: bool = True,
) -> dict[str, Any]:
    """Run `n` structured decisions on a fresh local server and summarise them.

    Args:
        n: Number of decisions.
        method: `with_structured_output` method (`function_calling`, `json_schema`,
            `json_mode`).
        chat_format: llama-cpp-python chat format of the server (None: the GGUF's
            own template).
        threads: CPU threads of the server (None: all).
        seed: Seed of the synthetic histories.
        bounded_numbers: Serve with the grammar that honours number bounds.

    Returns:
        Summary with rates, latencies, token counts and the failure messages.
    """
    from langchain_openai import ChatOpenAI

    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    ok = json_ok = 0
    failures: list[str] = []
    completion_tokens: list[int] = []
    prompt_tokens: list[int] = []
    t_start = time.perf_counter()
    with LocalLLMServer(chat_format=chat_format, n_threads=threads, bounded_numbers=bounded_numbers) as server:
        startup_s = time.perf_counter() - t_start
        chat = ChatOpenAI(
            base_url=server.base_url, api_key=SecretStr(LOCAL_API_KEY), model=server.model_alias, temperature=0.0,
            max_completion_tokens=512,  # the field ``max_tokens``, by its alias
            timeout=120.0, max_retries=0, seed=0,
            extra_body={"max_tokens": 512},  # the server ignores max_completion_tokens
        )
        structured = chat.with_structured_output(LossWeights, method=method, include_raw=True)
        for i in range(n):
            messages = [("system", SYSTEM_PROMPT), ("user", history_prompt(rng, i % 6))]
            t0 = time.perf_counter()
            try:
                out = structured.invoke(messages)
            except Exception as e:  # a probe records every failure mode
                latencies.append(time.perf_counter() - t0)
                failures.append(f"#{i}: request failed: {type(e).__name__}: {e}"[:300])
                continue
            latencies.append(time.perf_counter() - t0)
            raw = out["raw"]
            usage = getattr(raw, "usage_metadata", None) or {}
            completion_tokens.append(int(usage.get("output_tokens", 0)))
            prompt_tokens.append(int(usage.get("input_tokens", 0)))
            text, valid_json = _raw_answer(raw)
            json_ok += valid_json
            if out["parsed"] is not None:
                ok += 1
                logger.info("#%d %.2fs %s", i, latencies[-1], out["parsed"].model_dump())
            else:
                failures.append(f"#{i}: {out['parsing_error']!s:.200} | raw: {text!s:.200}")
                logger.info("#%d %.2fs FAILED %s", i, latencies[-1], failures[-1])
    return {
        "n": n,
        "method": method,
        "chat_format": chat_format,
        "bounded_numbers": bounded_numbers,
        "format_success_rate": ok / n,
        "json_valid_rate": json_ok / n,
        "median_latency_s": statistics.median(latencies),
        "max_latency_s": max(latencies),
        "server_startup_s": startup_s,
        "mean_prompt_tokens": statistics.fmean(prompt_tokens) if prompt_tokens else 0.0,
        "mean_completion_tokens": statistics.fmean(completion_tokens) if completion_tokens else 0.0,
        "failures": failures,
    }


def _raw_answer(raw: Any) -> tuple[str, bool]:
    """The raw answer as text, and whether it was valid JSON.

    LangChain puts tool calls whose arguments parsed as JSON in `tool_calls` and the
    others in `invalid_tool_calls`; a plain-text answer (json modes) is in `content`.
    """
    if getattr(raw, "tool_calls", None):
        return json.dumps(raw.tool_calls[0]["args"]), True
    if getattr(raw, "invalid_tool_calls", None):
        return str(raw.invalid_tool_calls[0].get("args")), False
    text = str(getattr(raw, "content", ""))
    try:
        json.loads(text)
    except ValueError:
        return text, False
    return text, True


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="number of decisions")
    parser.add_argument("--method", default="function_calling", choices=list(get_args(Method)))
    parser.add_argument(
        "--chat-format", default=DEFAULT_CHAT_FORMAT,
        help="llama-cpp-python chat format; 'none' uses the GGUF's own template",
    )
    parser.add_argument(
        "--stock-grammar", action="store_true",
        help="serve with llama-cpp-python's grammar, which ignores number bounds",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log every answer")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    chat_format = None if args.chat_format.lower() == "none" else args.chat_format
    summary = run_probe(
        args.n, args.method, chat_format, args.threads, args.seed, bounded_numbers=not args.stock_grammar
    )
    for key, value in summary.items():
        if key == "failures":
            continue
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    for failure in summary["failures"]:
        print(f"failure: {failure}")


if __name__ == "__main__":
    main()
