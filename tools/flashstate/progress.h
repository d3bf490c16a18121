// A progress indicator on stderr: a redrawn bar when stderr is a terminal, else one line per tenth of the work, so
// that CI logs stay readable.
#pragma once

#include <cstdint>
#include <string>

namespace flashstate_tool {

class Progress {
public:
    Progress(std::string label, int64_t total);
    void update(int64_t done); // call as often as convenient; it redraws only when the shown value changes
    void clear();              // on a terminal, erase the bar (before printing other lines); no-op otherwise
    void finish();             // the last update, and a newline on a terminal

private:
    std::string label_;
    int64_t total_;
    bool tty_;
    int64_t shown_ = -1; // percent (terminal) or tenth (log) last shown
    bool drawn_ = false;
};

} // namespace flashstate_tool
