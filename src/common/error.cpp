#include "common/error.h"

namespace fst {

namespace {
thread_local std::string last_error;
}

void fail(const std::string &tensor, const std::string &field, const std::string &actual, const std::string &expected,
          fst_status status) {
    throw Error(status, tensor + "." + field + " = " + actual + ", expected " + expected);
}

void fail(const std::string &tensor, const std::string &field, int64_t actual, const std::string &expected,
          fst_status status) {
    fail(tensor, field, std::to_string(actual), expected, status);
}

void fail_message(const std::string &message, fst_status status) { throw Error(status, message); }

void set_last_error(const std::string &message) { last_error = message; }

fst_status report(const char *function, fst_status status, const char *what) noexcept {
    try {
        set_last_error(std::string(function) + ": " + what);
    } catch (...) {
        // Keeping the status matters more than the message when even that allocation fails.
    }
    return status;
}

} // namespace fst

extern "C" const char *fst_last_error(void) { return fst::last_error.c_str(); }

extern "C" const char *fst_status_name(fst_status s) {
    switch (s) {
    case FST_OK: return "FST_OK";
    case FST_ERR_INVALID_ARGUMENT: return "FST_ERR_INVALID_ARGUMENT";
    case FST_ERR_UNSUPPORTED: return "FST_ERR_UNSUPPORTED";
    case FST_ERR_OUT_OF_MEMORY: return "FST_ERR_OUT_OF_MEMORY";
    case FST_ERR_IO: return "FST_ERR_IO";
    case FST_ERR_CORRUPT: return "FST_ERR_CORRUPT";
    case FST_ERR_DISTRIBUTED: return "FST_ERR_DISTRIBUTED";
    }
    return "FST_ERR_UNKNOWN";
}

extern "C" const char *fst_version(void) { return FLASHSTATE_VERSION_STRING; }
