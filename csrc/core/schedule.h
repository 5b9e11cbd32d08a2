// A fixed assignment of uneven work items to threads, for the CPU drivers (csrc/<family>/<family>_cpu.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace facekernels {

// Deals `items` to `threads` lists, the most costly first, each to the least loaded list so far (ties to
// the lowest list), then sorts each list by `before` (the order a thread walks its items in). The result
// depends only on the items, never on timing, so per-thread partial sums are added in the same order on
// every call. cost(item) -> int64_t or double; before(a, b) -> bool.
template <typename Item, typename Cost, typename Before>
std::vector<std::vector<Item>> deal_largest_first(std::vector<Item> items, int64_t threads, const Cost& cost,
                                                  const Before& before) {
  if (threads < 1) threads = 1;
  std::stable_sort(items.begin(), items.end(), [&](const Item& x, const Item& y) { return cost(x) > cost(y); });
  std::vector<std::vector<Item>> lists(static_cast<size_t>(threads));
  std::vector<decltype(cost(items.front()))> load(static_cast<size_t>(threads), 0);
  for (const Item& item : items) {
    const size_t least = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    lists[least].push_back(item);
    load[least] += cost(item);
  }
  for (auto& list : lists) std::sort(list.begin(), list.end(), before);
  return lists;
}

}  // namespace facekernels
