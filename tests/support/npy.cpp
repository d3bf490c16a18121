#include "support/npy.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fst_test {

namespace {

[[noreturn]] void fail(const std::string &where, const std::string &what) {
    throw std::runtime_error(where + ": " + what);
}

// The text after "'key':" in a numpy header dict, with leading spaces skipped.
size_t header_value(const std::string &header, const std::string &key, const std::string &path) {
    const size_t at = header.find("'" + key + "'");
    if (at == std::string::npos) fail(path, "npy header has no '" + key + "': " + header);
    size_t i = header.find(':', at);
    if (i == std::string::npos) fail(path, "npy header malformed: " + header);
    ++i;
    while (i < header.size() && header[i] == ' ') ++i;
    return i;
}

} // namespace

int64_t Npy::count() const {
    int64_t n = 1;
    for (int64_t e : shape) n *= e;
    return n;
}

std::vector<float> Npy::as_f32() const {
    if (descr != "<f4") throw std::runtime_error("Npy::as_f32: dtype is " + descr + ", not <f4");
    std::vector<float> values(static_cast<size_t>(count()));
    std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
    return values;
}

Npy read_npy(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open");
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

    // Magic "\x93NUMPY", version, header length (2 bytes in v1, 4 in v2/v3), then the header dict.
    if (content.size() < 10 || std::memcmp(content.data(), "\x93NUMPY", 6) != 0) fail(path, "not a .npy file");
    const auto byte = [&](size_t i) { return size_t(static_cast<unsigned char>(content[i])); };
    const int major = int(byte(6));
    size_t header_len = 0, header_start = 0;
    if (major == 1) {
        header_len = byte(8) | (byte(9) << 8);
        header_start = 10;
    } else if (major == 2 || major == 3) {
        if (content.size() < 12) fail(path, "truncated header");
        header_len = byte(8) | (byte(9) << 8) | (byte(10) << 16) | (byte(11) << 24);
        header_start = 12;
    } else {
        fail(path, "unsupported .npy version " + std::to_string(major));
    }
    if (content.size() < header_start + header_len) fail(path, "truncated header");
    const std::string header = content.substr(header_start, header_len);

    Npy a;
    size_t i = header_value(header, "descr", path);
    if (header[i] != '\'') fail(path, "descr is not a string: " + header);
    const size_t end = header.find('\'', i + 1);
    a.descr = header.substr(i + 1, end - i - 1);
    if (a.descr.size() < 3 || (a.descr[0] != '<' && a.descr[0] != '|'))
        fail(path, "unsupported dtype " + a.descr + " (little-endian or byte types only)");
    a.item_size = size_t(std::stoul(a.descr.substr(2)));

    i = header_value(header, "fortran_order", path);
    if (header.compare(i, 5, "False") != 0) fail(path, "Fortran order is not supported");

    i = header_value(header, "shape", path);
    if (header[i] != '(') fail(path, "shape is not a tuple: " + header);
    const size_t close = header.find(')', i);
    std::stringstream dims(header.substr(i + 1, close - i - 1));
    std::string item;
    while (std::getline(dims, item, ',')) {
        if (item.find_first_not_of(' ') == std::string::npos) continue; // the empty item after "(n,"
        a.shape.push_back(std::stoll(item));
    }

    const size_t data_bytes = size_t(a.count()) * a.item_size;
    const size_t data_start = header_start + header_len;
    if (content.size() != data_start + data_bytes)
        fail(path, "data holds " + std::to_string(content.size() - data_start) + " bytes, shape needs " +
                       std::to_string(data_bytes));
    a.bytes.assign(content.begin() + std::ptrdiff_t(data_start), content.end());
    return a;
}

// ---- JSON ----

bool Json::has(const std::string &key) const { return kind == Kind::object && fields.count(key) != 0; }

const Json &Json::operator[](const std::string &key) const {
    if (kind != Kind::object) throw std::runtime_error("json: not an object (looking up '" + key + "')");
    auto it = fields.find(key);
    if (it == fields.end()) throw std::runtime_error("json: no field '" + key + "'");
    return it->second;
}

double Json::number() const {
    if (kind != Kind::number) throw std::runtime_error("json: value is not a number");
    return num;
}

int64_t Json::integer() const {
    const double x = number();
    if (x != std::floor(x)) throw std::runtime_error("json: number is not an integer");
    return int64_t(x);
}

const std::string &Json::string() const {
    if (kind != Kind::string) throw std::runtime_error("json: value is not a string");
    return str;
}

bool Json::boolean() const {
    if (kind != Kind::boolean) throw std::runtime_error("json: value is not a bool");
    return b;
}

namespace {

// Recursive-descent parser over one JSON text.
struct Parser {
    const std::string &text;
    size_t i = 0;

    [[noreturn]] void error(const std::string &what) const {
        throw std::runtime_error("json: " + what + " at offset " + std::to_string(i));
    }
    void skip_space() {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
    }
    bool consume(const char *word) {
        const size_t n = std::strlen(word);
        if (text.compare(i, n, word) != 0) return false;
        i += n;
        return true;
    }
    void expect(char c) {
        skip_space();
        if (i >= text.size() || text[i] != c) error(std::string("expected '") + c + "'");
        ++i;
    }

    static void append_utf8(std::string &out, uint32_t cp) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xc0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += char(0xe0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3f));
            out += char(0x80 | (cp & 0x3f));
        } else {
            out += char(0xf0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3f));
            out += char(0x80 | ((cp >> 6) & 0x3f));
            out += char(0x80 | (cp & 0x3f));
        }
    }

    uint32_t hex4() {
        if (i + 4 > text.size()) error("truncated \\u escape");
        const uint32_t cp = uint32_t(std::stoul(text.substr(i, 4), nullptr, 16));
        i += 4;
        return cp;
    }

    std::string parse_string() {
        expect('"');
        std::string out;
        while (true) {
            if (i >= text.size()) error("unterminated string");
            const char c = text[i++];
            if (c == '"') return out;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i >= text.size()) error("unterminated escape");
            const char e = text[i++];
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                uint32_t cp = hex4();
                if (cp >= 0xd800 && cp < 0xdc00 && consume("\\u")) { // surrogate pair
                    const uint32_t low = hex4();
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                }
                append_utf8(out, cp);
                break;
            }
            default: error(std::string("bad escape \\") + e);
            }
        }
    }

    Json parse_value() {
        skip_space();
        if (i >= text.size()) error("unexpected end");
        Json v;
        const char c = text[i];
        if (c == '{') {
            v.kind = Json::Kind::object;
            ++i;
            skip_space();
            if (i < text.size() && text[i] == '}') {
                ++i;
                return v;
            }
            while (true) {
                skip_space();
                std::string key = parse_string();
                expect(':');
                v.fields[key] = parse_value();
                skip_space();
                if (i < text.size() && text[i] == ',') {
                    ++i;
                    continue;
                }
                expect('}');
                return v;
            }
        }
        if (c == '[') {
            v.kind = Json::Kind::array;
            ++i;
            skip_space();
            if (i < text.size() && text[i] == ']') {
                ++i;
                return v;
            }
            while (true) {
                v.items.push_back(parse_value());
                skip_space();
                if (i < text.size() && text[i] == ',') {
                    ++i;
                    continue;
                }
                expect(']');
                return v;
            }
        }
        if (c == '"') {
            v.kind = Json::Kind::string;
            v.str = parse_string();
            return v;
        }
        if (consume("true")) {
            v.kind = Json::Kind::boolean;
            v.b = true;
            return v;
        }
        if (consume("false")) {
            v.kind = Json::Kind::boolean;
            return v;
        }
        if (consume("null")) return v;
        // Python's json module also writes NaN, Infinity and -Infinity.
        v.kind = Json::Kind::number;
        if (consume("NaN")) {
            v.num = std::nan("");
            return v;
        }
        if (consume("Infinity")) {
            v.num = HUGE_VAL;
            return v;
        }
        if (consume("-Infinity")) {
            v.num = -HUGE_VAL;
            return v;
        }
        const char *begin = text.c_str() + i;
        char *end = nullptr;
        v.num = std::strtod(begin, &end);
        if (end == begin) error("unexpected character '" + std::string(1, c) + "'");
        i += size_t(end - begin);
        return v;
    }
};

} // namespace

Json parse_json(const std::string &text) {
    Parser p{text};
    Json v = p.parse_value();
    p.skip_space();
    if (p.i != text.size()) p.error("trailing characters");
    return v;
}

std::vector<Json> read_json_lines(const std::string &path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(path + ": cannot open");
    std::vector<Json> values;
    std::string line;
    int line_number = 0;
    while (std::getline(in, line)) {
        ++line_number;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            values.push_back(parse_json(line));
        } catch (const std::exception &e) {
            throw std::runtime_error(path + ":" + std::to_string(line_number) + ": " + e.what());
        }
    }
    return values;
}

} // namespace fst_test
