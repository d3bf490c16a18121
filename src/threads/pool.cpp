#include "threads/pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace fst {

namespace {

class Pool {
public:
    explicit Pool(int n_threads) : ranges_(size_t(n_threads) + 1) {
        for (int i = 0; i < n_threads; ++i) {
            try {
                threads_.emplace_back([this, i] { worker_loop(i + 1); });
            } catch (...) {
                break; // fewer helpers; calls still complete on the threads that exist
            }
        }
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_.store(true);
        }
        wake_.notify_all();
        for (auto &t : threads_) t.join();
    }

    // Returns false (running nothing) when another call holds the pool.
    bool run(size_t n_tasks, int n_workers, const TaskRef &fn) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        const int helpers = n_workers - 1 < int(threads_.size()) ? n_workers - 1 : int(threads_.size());
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            const size_t n_ranges = size_t(helpers) + 1;
            for (size_t w = 0; w < n_ranges; ++w) {
                ranges_[w].next.store(w * n_tasks / n_ranges);
                ranges_[w].end = (w + 1) * n_tasks / n_ranges;
            }
            n_ranges_ = n_ranges;
            helpers_.store(helpers);
            active_.store(helpers);
            generation_.fetch_add(1, std::memory_order_release); // publishes the job to spinning workers
        }
        wake_.notify_all();
        take_tasks(0);
        // Wait for the helpers: spin a little first (they usually finish about when we do), then sleep.
        if (!spin_until([&] { return active_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [this] { return active_.load(std::memory_order_acquire) == 0; });
        }
        return true;
    }

private:
    // Busy-waits up to kSpin for cond(). Calls in quick succession (one per KV segment, one per layer) then find
    // the workers awake: a sleeping thread takes tens of microseconds to wake, as long as a small call itself.
    template <class Cond> static bool spin_until(Cond &&cond) {
        constexpr auto kSpin = std::chrono::microseconds(200);
        const auto until = std::chrono::steady_clock::now() + kSpin;
        for (int i = 0;; ++i) {
            if (cond()) return true;
            if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return false;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }

    // Worker w first runs the tasks of its own range, in order, then takes what is left of the others'. Neighbouring
    // tasks read neighbouring memory (the pieces of one KV head), and a thread keeps the same range from call to
    // call when the task count repeats (the same KV heads, whose next rows its caches may already hold); taking
    // one task at a time from any range keeps the threads balanced.
    void take_tasks(int worker) {
        for (size_t i = 0; i < n_ranges_; ++i) {
            Range &r = ranges_[(size_t(worker) + i) % n_ranges_];
            for (size_t t = r.next.fetch_add(1); t < r.end; t = r.next.fetch_add(1)) (*fn_)(t, worker);
        }
    }

    void worker_loop(int worker) {
        uint64_t seen = 0;
        for (;;) {
            auto fresh = [&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
            if (!spin_until(fresh)) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, fresh);
            }
            if (stop_.load(std::memory_order_acquire)) return;
            seen = generation_.load(std::memory_order_acquire);
            if (worker > helpers_.load(std::memory_order_acquire)) continue; // not needed for this call
            take_tasks(worker);
            if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(mutex_); // pairs with the caller's check under the same mutex
                done_.notify_one();
            }
        }
    }

    std::vector<std::thread> threads_;
    std::mutex busy_, mutex_;
    std::condition_variable wake_, done_;
    struct alignas(64) Range { // tasks [next, end) not yet taken; a cache line each, as threads update them at once
        std::atomic<size_t> next{0};
        size_t end = 0;
    };
    std::vector<Range> ranges_; // one per worker of the pool (the caller and each helper)
    // fn_, n_ranges_ and the ranges' ends: written before generation_'s release, read after its acquire.
    const TaskRef *fn_ = nullptr;
    size_t n_ranges_ = 0;
    std::atomic<int> helpers_{0}, active_{0};
    std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};
};

Pool &pool() {
    static Pool p(hardware_threads() - 1);
    return p;
}

} // namespace

int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : int(n);
}

void parallel_for(size_t n_tasks, int n_workers, TaskRef fn) {
    if (n_workers > 1 && n_tasks > 1 && pool().run(n_tasks, n_workers, fn)) return;
    for (size_t t = 0; t < n_tasks; ++t) fn(t, 0);
}

} // namespace fst
