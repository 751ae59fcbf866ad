"""python benchmarks/topk_fast.py [--n 100000] [--dim 512] [--threads 2] [--reps 30] [--hnsw]

Top-5 over N normalised candidate embeddings: exact torch fp32 (today's AddressLocator.top_k),
torch fp16/bf16 matrices, faiss-cpu exact (IndexFlatIP), int8 scalar quantisation
(IndexScalarQuantizer) alone and with an exact fp32 re-rank of its top 64 (IndexRefineFlat), and
with --hnsw HNSW graphs (IndexHNSWFlat; minutes to build at 100k). One query and batches of 64: ms per image,
build time, memory, and recall@5 against exact fp32 search. Queries are noisy copies of random
candidates (a photo resembles its address), plus pure random queries for the hardest case.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _time(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(e)) / len(e) for g, e in zip(got, exact)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--queries", type=int, default=256, help="queries for recall")
    ap.add_argument("--hnsw", action="store_true", help="also build HNSW graphs (slow to build)")
    args = ap.parse_args(argv)
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    noise = rng.standard_normal((args.queries, args.dim)).astype(np.float32) * 0.02
    near = cand[rng.integers(0, args.n, args.queries)] + noise
    rand = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries = {"near": near / np.linalg.norm(near, axis=1, keepdims=True),
               "random": rand / np.linalg.norm(rand, axis=1, keepdims=True)}
    ct = torch.from_numpy(cand)
    exact = {k: torch.topk(torch.from_numpy(q) @ ct.T, 5).indices.numpy() for k, q in queries.items()}

    def torch_search(mat):
        def run(q):
            return torch.topk(torch.from_numpy(q).to(mat.dtype) @ mat.T, 5).indices.numpy()
        return run

    methods = {}
    methods["torch fp32 (exact, today)"] = (torch_search(ct), 0.0, ct.numel() * 4)
    for dt in (torch.float16, torch.bfloat16):
        m = ct.to(dt)
        methods[f"torch {str(dt)[6:]}"] = (torch_search(m), 0.0, m.numel() * 2)

    def faiss_search(index):
        def run(q):
            return index.search(q, 5)[1]
        return run

    t = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(cand)
    methods["faiss IndexFlatIP (exact)"] = (faiss_search(flat), time.perf_counter() - t, cand.nbytes)
    t = time.perf_counter()
    sq = faiss.IndexScalarQuantizer(args.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq.train(cand)
    sq.add(cand)
    methods["faiss SQ8 (int8, brute force)"] = (faiss_search(sq), time.perf_counter() - t, cand.nbytes // 4)
    t = time.perf_counter()
    sq_base = faiss.IndexScalarQuantizer(args.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq_base.train(cand)
    refine = faiss.IndexRefineFlat(sq_base)  # int8 scan, then exact fp32 inner products for the best k_factor·k
    refine.add(cand)
    refine.k_factor = 64 / 5
    methods["faiss SQ8 + exact re-rank of top 64"] = (faiss_search(refine), time.perf_counter() - t,
                                                      cand.nbytes + cand.nbytes // 4)
    if args.hnsw:
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        hnsw.add(cand)
        build = time.perf_counter() - t
        for ef in (64, 256):
            def run(q, ef=ef):
                hnsw.hnsw.efSearch = ef
                return hnsw.search(q, 5)[1]
            methods[f"faiss HNSW32 efSearch={ef}"] = (run, build, cand.nbytes + args.n * 32 * 2 * 4)

    print(f"top-5 over {args.n:,} candidates at {args.dim}-d, {args.threads} threads "
          f"(shared machine: other jobs were running)\n")
    print("| method | 1 query, ms | batch 64, ms/image | recall@5 near | recall@5 random | build s | MB |")
    print("|---|---|---|---|---|---|---|")
    for name, (fn, build_s, nbytes) in methods.items():
        one = _time(lambda: fn(queries["near"][:1]), args.reps) * 1000
        b64 = _time(lambda: fn(queries["near"][:64]), max(3, args.reps // 5)) * 1000 / 64
        rec = {k: _recall(fn(q), exact[k]) for k, q in queries.items()}
        print(f"| {name} | {one:.2f} | {b64:.3f} | {rec['near']:.3f} | {rec['random']:.3f} | {build_s:.1f} | "
              f"{nbytes / 2**20:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
