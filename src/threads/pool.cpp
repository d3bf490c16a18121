#include "threads/pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace fst {

namespace {

class Pool {
public:
    explicit Pool(int n_threads) {
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
            stop_ = true;
        }
        wake_.notify_all();
        for (auto &t : threads_) t.join();
    }

    // Returns false (running nothing) when another call holds the pool.
    bool run(size_t n_tasks, int n_workers, const TaskRef &fn) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            n_tasks_ = n_tasks;
            next_.store(0);
            helpers_ = n_workers - 1 < int(threads_.size()) ? n_workers - 1 : int(threads_.size());
            active_ = helpers_;
            ++generation_;
        }
        wake_.notify_all();
        take_tasks(0);
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return active_ == 0; });
        fn_ = nullptr;
        return true;
    }

private:
    void take_tasks(int worker) {
        for (size_t t = next_.fetch_add(1); t < n_tasks_; t = next_.fetch_add(1)) (*fn_)(t, worker);
    }

    void worker_loop(int worker) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                if (worker > helpers_) continue; // not needed for this call
            }
            take_tasks(worker);
            std::lock_guard<std::mutex> lock(mutex_);
            if (--active_ == 0) done_.notify_one();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex busy_, mutex_;
    std::condition_variable wake_, done_;
    const TaskRef *fn_ = nullptr;
    size_t n_tasks_ = 0;
    std::atomic<size_t> next_{0};
    int helpers_ = 0, active_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
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
