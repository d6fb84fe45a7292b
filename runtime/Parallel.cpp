//===- Parallel.cpp - A small fork-join pool for CPU kernels ----------------===//
#include "runtime/Parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace qlora {
namespace {

int defaultThreadCount() {
  if (const char *env = std::getenv("QLORA_NUM_THREADS")) {
    int value = std::atoi(env);
    if (value > 0)
      return value;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : int(hw);
}

/// Workers sleep on a condition variable between jobs; a job is a range split
/// into chunks that workers (and the caller) claim with an atomic counter.
class ThreadPool {
public:
  explicit ThreadPool(int threads) {
    for (int i = 1; i < threads; ++i)
      workers_.emplace_back([this] { workerLoop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread &worker : workers_)
      worker.join();
  }
  int size() const { return int(workers_.size()) + 1; }

  void run(int64_t chunks, const std::function<void(int64_t)> &chunkBody) {
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &chunkBody;
    jobChunks_ = chunks;
    nextChunk_.store(0);
    busyWorkers_ = int(workers_.size());
    ++generation_;
    lock.unlock();
    wake_.notify_all();
    drain();
    lock.lock();
    done_.wait(lock, [this] { return busyWorkers_ == 0; });
    job_ = nullptr;
  }

private:
  void drain() {
    for (int64_t chunk = nextChunk_.fetch_add(1); chunk < jobChunks_;
         chunk = nextChunk_.fetch_add(1))
      (*job_)(chunk);
  }

  void workerLoop() {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_)
        return;
      seen = generation_;
      lock.unlock();
      drain();
      lock.lock();
      if (--busyWorkers_ == 0)
        done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  bool stopping_ = false;
  uint64_t generation_ = 0;
  int busyWorkers_ = 0;
  const std::function<void(int64_t)> *job_ = nullptr;
  int64_t jobChunks_ = 0;
  std::atomic<int64_t> nextChunk_{0};
};

std::mutex poolMutex;
std::unique_ptr<ThreadPool> pool;
int requestedThreads = 0;
thread_local bool insideParallelFor = false;

ThreadPool &getPool() {
  std::lock_guard<std::mutex> lock(poolMutex);
  if (!pool)
    pool = std::make_unique<ThreadPool>(
        requestedThreads > 0 ? requestedThreads : defaultThreadCount());
  return *pool;
}

} // namespace

int numThreads() { return getPool().size(); }

void setNumThreads(int threads) {
  std::lock_guard<std::mutex> lock(poolMutex);
  requestedThreads = threads;
  pool.reset();
}

void parallelFor(int64_t begin, int64_t end, int64_t grain,
                 const std::function<void(int64_t, int64_t)> &body) {
  if (end <= begin)
    return;
  grain = std::max<int64_t>(grain, 1);
  int64_t length = end - begin;
  if (insideParallelFor || length <= grain) {
    body(begin, end);
    return;
  }
  ThreadPool &threads = getPool();
  // A few chunks per thread balance uneven work without much overhead.
  int64_t chunks = std::min<int64_t>((length + grain - 1) / grain,
                                     int64_t(threads.size()) * 4);
  int64_t chunkLength = (length + chunks - 1) / chunks;
  chunks = (length + chunkLength - 1) / chunkLength;
  if (chunks <= 1 || threads.size() == 1) {
    body(begin, end);
    return;
  }
  // One job at a time: nested or concurrent callers wait for the pool.
  static std::mutex jobMutex;
  std::lock_guard<std::mutex> jobLock(jobMutex);
  threads.run(chunks, [&](int64_t chunk) {
    insideParallelFor = true;
    int64_t chunkBegin = begin + chunk * chunkLength;
    body(chunkBegin, std::min(end, chunkBegin + chunkLength));
    insideParallelFor = false;
  });
}

} // namespace qlora
