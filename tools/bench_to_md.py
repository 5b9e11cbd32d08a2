"""Turn a benchmark result JSON (python -m facekernels bench) into the markdown table of
docs/benchmarks.md: python tools/bench_to_md.py bench/results/latest-cpu.json"""

import json
import sys


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
        ours = row["timing"]["facekernels"]["median_s"]
        for name, t in row["timing"].items():
            sec = t["median_s"]
            speed = "" if name == "facekernels" else f"{sec / ours:.2f}x"
            print(f"| {row['workload']} | {row['mode']} | {name} | {sec * 1e3:.3f} | {t['iqr_s'] * 1e3:.3f} | {speed} | "
                  f"{100 * row['flops'] / sec / 1e9 / ceil['sgemm_gflops']:.1f} | "
                  f"{100 * row['bytes'] / sec / 1e9 / ceil['copy_gbps']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
