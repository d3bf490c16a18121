// One process-wide pool of worker threads, created on first use and kept (no thread creation per call).
// parallel_for runs fn(task, worker) for every task on the calling thread (worker 0) plus up to n_workers - 1 pool
// threads. Tasks are independent and write disjoint memory, so which worker runs a task never changes a result.
// Each worker starts on its own contiguous range of the tasks and then helps with the others' (pool.cpp).
// Policy for concurrent calls: the pool serves one call at a time; a call that finds it busy runs all of its tasks
// on its own thread (same results, less parallelism). Never fails once started.
#pragma once

#include <cstddef>
#include <type_traits>

namespace fst {

// A non-owning reference to a callable fn(size_t task, int worker): unlike std::function it never allocates.
class TaskRef {
public:
    template <class F> TaskRef(F &f) : obj_(&f), call_([](void *o, size_t t, int w) { (*static_cast<F *>(o))(t, w); }) {}
    void operator()(size_t task, int worker) const { call_(obj_, task, worker); }

private:
    void *obj_;
    void (*call_)(void *, size_t, int);
};

void parallel_for(size_t n_tasks, int n_workers, TaskRef fn);

// Threads a call may use when it asks for 0 (= every hardware thread).
int hardware_threads();

} // namespace fst
