// Bounds-checked big-endian reader over a byte buffer.
//
// Every read checks the remaining length. The first failure is recorded with its byte offset and a
// reason, later reads return zero values, so a decoder can read a whole message and check once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace logical_audit::pgoutput {

class Reader {
public:
	Reader(const uint8_t *data, size_t size) : data_(data), size_(size) {}

	uint8_t u8() { return static_cast<uint8_t>(read_be(1)); }
	uint16_t u16() { return static_cast<uint16_t>(read_be(2)); }
	uint32_t u32() { return static_cast<uint32_t>(read_be(4)); }
	uint64_t u64() { return read_be(8); }
	int32_t i32() { return static_cast<int32_t>(u32()); }
	int64_t i64() { return static_cast<int64_t>(u64()); }

	// A NUL-terminated string; the view excludes the terminator.
	std::string_view cstring() {
		if (failed_)
			return {};
		const void *nul = std::memchr(data_ + pos_, 0, size_ - pos_);
		if (nul == nullptr) {
			fail("string is not NUL-terminated");
			return {};
		}
		size_t len = static_cast<const uint8_t *>(nul) - (data_ + pos_);
		std::string_view s(reinterpret_cast<const char *>(data_ + pos_), len);
		pos_ += len + 1;
		return s;
	}

	// The next n bytes, without copying.
	std::string_view bytes(size_t n) {
		if (!take(n))
			return {};
		return std::string_view(reinterpret_cast<const char *>(data_ + pos_ - n), n);
	}

	// Advances over n bytes; false (and failed) when fewer remain.
	bool take(size_t n) {
		if (failed_)
			return false;
		if (n > size_ - pos_) {
			fail("message is truncated");
			return false;
		}
		pos_ += n;
		return true;
	}

	// Records the first failure at the current offset.
	void fail(const char *reason) { fail_at(pos_, reason); }

	// Records the first failure at an earlier offset, e.g. of a byte already read and found wrong.
	void fail_at(size_t offset, const char *reason) {
		if (failed_)
			return;
		failed_ = true;
		error_offset_ = offset;
		reason_ = reason;
	}

	bool failed() const { return failed_; }
	size_t offset() const { return pos_; }
	size_t remaining() const { return size_ - pos_; }
	size_t error_offset() const { return error_offset_; }
	const char *reason() const { return reason_; }
	const uint8_t *here() const { return data_ + pos_; }

private:
	uint64_t read_be(size_t n) {
		if (!take(n))
			return 0;
		const uint8_t *p = data_ + pos_ - n;
		uint64_t v = 0;
		for (size_t i = 0; i < n; i++)
			v = (v << 8) | p[i];
		return v;
	}

	const uint8_t *data_;
	size_t size_;
	size_t pos_ = 0;
	bool failed_ = false;
	size_t error_offset_ = 0;
	const char *reason_ = nullptr;
};

} // namespace logical_audit::pgoutput
