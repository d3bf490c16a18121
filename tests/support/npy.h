// Readers for the golden data: .npy arrays (version 1.0/2.0, little-endian, C order) and JSON lines (cases.jsonl).
// Both throw std::runtime_error with the file name and the problem on anything they do not understand.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fst_test {

// A .npy array as stored: its dtype string ("<f4", "<f2", "<u2", "|u1", "<i4", ...), its numpy shape (outermost
// first, i.e. the ggml ne reversed) and its raw little-endian bytes.
struct Npy {
    std::string descr;
    std::vector<int64_t> shape;
    size_t item_size = 0;
    std::vector<unsigned char> bytes;

    int64_t count() const; // number of elements
    std::vector<float> as_f32() const; // only for "<f4"
};

Npy read_npy(const std::string &path);

// A JSON value: null, bool, number, string, array or object (object keys sorted; duplicate keys keep the last).
struct Json {
    enum class Kind { null, boolean, number, string, array, object };
    Kind kind = Kind::null;
    bool b = false;
    double num = 0;
    std::string str;
    std::vector<Json> items;
    std::map<std::string, Json> fields;

    bool is_null() const { return kind == Kind::null; }
    bool has(const std::string &key) const;
    const Json &operator[](const std::string &key) const; // throws if absent or not an object
    double number() const;                               // throws unless a number
    int64_t integer() const;                             // throws unless an integral number
    const std::string &string() const;                   // throws unless a string
    bool boolean() const;                                // throws unless a bool
};

Json parse_json(const std::string &text);
// One value per non-empty line.
std::vector<Json> read_json_lines(const std::string &path);

} // namespace fst_test
