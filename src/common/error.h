// Errors inside the library are exceptions (fst::Error); every C entry point catches them in fst::guard, stores
// the message for fst_last_error() and returns the status. No exception ever crosses the C API.
#pragma once

#include <flashstate/flashstate.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace fst {

struct Error : std::runtime_error {
    fst_status status;
    Error(fst_status s, const std::string &msg) : std::runtime_error(msg), status(s) {}
};

// Formats "<tensor>.<field> = <actual>, expected <expected>" and throws FST_ERR_INVALID_ARGUMENT (or the status).
[[noreturn]] void fail(const std::string &tensor, const std::string &field, const std::string &actual,
                       const std::string &expected, fst_status status = FST_ERR_INVALID_ARGUMENT);
[[noreturn]] void fail(const std::string &tensor, const std::string &field, int64_t actual,
                       const std::string &expected, fst_status status = FST_ERR_INVALID_ARGUMENT);
[[noreturn]] void fail_message(const std::string &message, fst_status status = FST_ERR_INVALID_ARGUMENT);

void set_last_error(const std::string &message);

// Runs body(); converts fst::Error, std::bad_alloc and anything else into a status and a message prefixed with
// the function's name.
template <class Body> fst_status guard(const char *function, Body &&body) noexcept;

fst_status report(const char *function, fst_status status, const char *what) noexcept;

template <class Body> fst_status guard(const char *function, Body &&body) noexcept {
    try {
        std::forward<Body>(body)();
        return FST_OK; // fst_last_error() keeps the last *failed* call's message

    } catch (const Error &e) {
        return report(function, e.status, e.what());
    } catch (const std::bad_alloc &) {
        return report(function, FST_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        return report(function, FST_ERR_INVALID_ARGUMENT, e.what());
    } catch (...) {
        return report(function, FST_ERR_INVALID_ARGUMENT, "unknown internal error");
    }
}

} // namespace fst
