"""The built-in generator beside llama.cpp's own server on the same GGUF and the same prompt.

ragd side: `ragd bench generator --json --prompt-out FILE` (in-process llama.cpp through llama-cpp-2).
Peer side: `python -m llama_cpp.server` (llama-cpp-python) with the same GGUF, context and threads,
given the exact prompt text over HTTP (`/v1/completions`, streamed, greedy), timed from the client:
time to first token (≈ prefill), generation tokens/s between the first and the last token, and the
server's peak resident memory (VmHWM). The peer's timings include HTTP on loopback (well under 1 ms).

Usage: python3 bench/generator.py [--ragd target/release/ragd] [--runs 5] [--threads 2]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--ragd", default="target/release/ragd")
ap.add_argument("--models", default=os.path.expanduser("~/.cache/ragd/models"))
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--max-tokens", type=int, default=128)
args = ap.parse_args()
gguf = os.path.join(args.models, "gemma-3-270m-q4_k_m.gguf")
prompt_file = tempfile.mktemp(suffix=".txt")

out = subprocess.run([args.ragd, "bench", "generator", "--json", "--runs", str(args.runs), "--threads", str(args.threads),
                      "--max-tokens", str(args.max_tokens), "--prompt-out", prompt_file, "--models", args.models],
                     check=True, capture_output=True, text=True)
ragd = json.loads(out.stdout.strip().splitlines()[-1])
prompt = open(prompt_file).read()

port = socket.socket(); port.bind(("127.0.0.1", 0)); p = port.getsockname()[1]; port.close()
server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(p),
                           "--n_ctx", "4096", "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    base = f"http://127.0.0.1:{p}"
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/v1/models", timeout=1); break
        except Exception:
            time.sleep(0.1)

    def once(i):
        # llama-cpp-python reuses the KV state of the longest common prefix with the previous request;
        # a distinct first line per run makes every run read the whole prompt, as ragd does.
        body = json.dumps({"prompt": f"Run {i}.\n" + prompt, "max_tokens": args.max_tokens, "temperature": 0, "repeat_penalty": 1.1,
                           "stream": True, "cache_prompt": False}).encode()
        req = urllib.request.Request(base + "/v1/completions", data=body, headers={"content-type": "application/json"})
        t0 = time.perf_counter(); first = None; last = None; n = 0
        with urllib.request.urlopen(req) as r:
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                d = json.loads(line[5:])
                if d["choices"][0].get("text"):
                    now = time.perf_counter(); first = first or now; last = now; n += 1
        return first - t0, n, (last - first)

    once(0)  # warm-up
    rows = [once(i + 1) for i in range(args.runs)]
    ttft = sum(r[0] for r in rows) / len(rows)
    gen_tps = sum((r[1] - 1) / r[2] for r in rows if r[2] > 0) / len(rows)
    status = open(f"/proc/{server.pid}/status").read()
    peak = int([l for l in status.splitlines() if l.startswith("VmHWM")][0].split()[1]) / 1024
    peer = {"ttft_ms": round(ttft * 1e3, 1), "prompt_tokens_per_s": round(ragd["prompt_tokens"] / ttft),
            "generation_tokens_per_s": round(gen_tps, 1), "peak_rss_mb": round(peak), "completion_tokens_mean": sum(r[1] for r in rows) / len(rows)}
finally:
    server.terminate(); server.wait()

print(f"prompt: {ragd['prompt_tokens']} tokens ({ragd['passages']} passages), {args.threads} threads, {args.runs} runs, greedy")
print(f"{'':28}{'ragd builtin':>14}{'llama_cpp.server':>18}{'ratio':>8}")
for key, label, better_high in [("ttft_ms", "time to first token (ms)", False), ("prompt_tokens_per_s", "prompt tokens/s", True),
                                ("generation_tokens_per_s", "generation tokens/s", True), ("peak_rss_mb", "peak RSS (MB)", False)]:
    a, b = ragd[key], peer[key]
    print(f"{label:28}{a:>14}{b:>18}{(a / b if b else float('nan')):>8.2f}")
print(json.dumps({"ragd": ragd, "llama_cpp_server": peer}))
