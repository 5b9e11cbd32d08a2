"""Turn a benchmark result JSON (python -m facekernels bench) into the markdown table of
docs/benchmarks.md: python tools/bench_to_md.py bench/results/latest-cpu.json"""

import json
import sys

from facekernels.bench.harness import _rate


def main(path: str) -> None:
    with open(path) as f:
        result = json.load(f)
    meta, ceil = result["meta"], result["ceilings"]
    print(f"- commit {meta['commit']}, facekernels {meta['facekernels']}, torch {meta['torch']}, "
          f"{meta.get('gpu', meta['cpu'])}, {meta['threads']} threads, {result['repeats']} samples, {meta['date']}")
    print(f"- ceilings: copy {ceil['copy_gbps']:.1f} GB/s, SGEMM {ceil['sgemm_gflops']:.1f} GFLOP/s\n")
    print("| workload | mode | candidate | median ms | IQR ms | facekernels speedup | % SGEMM | % copy |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in result["results"]:
        for name, t in row["timing"].items():
            flop_frac, byte_frac = _rate(row, name, ceil)
            speed = f"{row['speedup'][name]:.2f}x" if name in row["speedup"] else ""
            noisy = " (noisy)" if t.get("noisy") else ""
            print(f"| {row['workload']} | {row['mode']} | {name} | {t['median_s'] * 1e3:.3f} | "
                  f"{t['iqr_s'] * 1e3:.3f}{noisy} | {speed} | {100 * flop_frac:.1f} | "
                  f"{100 * byte_frac:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
