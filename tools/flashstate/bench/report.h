// `flashstate bench`: the case table and the PASS/FAIL line of each target of issue 4.
#pragma once

#include "bench/cases.h"
#include "bench/machine.h"
#include "bench/timing.h"

#include <vector>

namespace flashstate_tool::bench {

// One line of the case table (or CSV).
void print_result(const Result &r, bool csv);

void print_table_header(bool csv);

// The targets of issue 4 item 6, at 2 threads. Returns the number of failures.
int print_targets(const std::vector<Result> &results, const Paired &split, const Limits &limits, bool csv);

} // namespace flashstate_tool::bench
