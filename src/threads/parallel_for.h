// Runs fn(task, worker) for every task in [0, n_tasks) on up to n_workers threads (the caller is worker 0).
// Tasks are independent and each writes only its own rows, so which worker runs a task never changes a result.
// If a thread cannot be started, the threads that did start (or the caller alone) take all the tasks: the call
// cannot fail after it has begun writing.
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace fst {

template <class Fn> void parallel_for(size_t n_tasks, int n_workers, Fn &&fn) {
    std::atomic<size_t> next{0};
    auto work = [&](int worker) {
        for (size_t t = next.fetch_add(1); t < n_tasks; t = next.fetch_add(1)) fn(t, worker);
    };
    std::vector<std::thread> threads;
    try {
        threads.reserve(size_t(n_workers));
    } catch (...) {
        n_workers = 1;
    }
    for (int w = 1; w < n_workers; ++w) {
        try {
            threads.emplace_back(work, w);
        } catch (...) {
            break;
        }
    }
    work(0);
    for (auto &t : threads) t.join();
}

} // namespace fst
