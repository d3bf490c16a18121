#include "progress.h"

#include <cstdio>
#include <string>
#include <utility>
#include <unistd.h>

namespace flashstate_tool {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total > 0 ? total : 1), tty_(isatty(STDERR_FILENO) == 1) {}

void Progress::update(int64_t done) {
    if (tty_) {
        const int64_t percent = 100 * done / total_;
        if (percent == shown_ && drawn_) return;
        constexpr int kWidth = 40;
        const int filled = int(kWidth * done / total_);
        std::fprintf(stderr, "\r%s [%s%s] %3lld%% %lld/%lld", label_.c_str(), std::string(size_t(filled), '#').c_str(),
                     std::string(size_t(kWidth - filled), '.').c_str(), (long long)percent, (long long)done,
                     (long long)total_);
        std::fflush(stderr);
        shown_ = percent;
        drawn_ = true;
    } else {
        const int64_t tenth = 10 * done / total_;
        if (tenth == shown_ || tenth == 0) return;
        std::fprintf(stderr, "%s: %lld%% (%lld/%lld)\n", label_.c_str(), (long long)(10 * tenth), (long long)done,
                     (long long)total_);
        shown_ = tenth;
    }
}

void Progress::clear() {
    if (!tty_ || !drawn_) return;
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    drawn_ = false;
}

void Progress::finish() {
    update(total_);
    if (tty_) std::fputc('\n', stderr);
}

} // namespace flashstate_tool
