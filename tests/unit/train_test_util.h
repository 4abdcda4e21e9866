// Helpers shared by the training engine's tests (test_train_io, test_prune).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/common.h"
#include "params.h"

namespace pangu_test {

// f() throws a pangu::Error with `status` whose message holds every one of `words`.
inline void expect_error(const std::function<void()> &f, pangu_status status, const std::vector<std::string> &words) {
    try {
        f();
        ADD_FAILURE() << "no error; expected status " << status;
    } catch (const pangu::Error &e) {
        EXPECT_EQ(e.status(), status) << e.what();
        for (const std::string &w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
    }
}

// Every tensor of a and b bitwise equal (names and shapes too).
inline void expect_same(const pangu::train::Params<float> &a, const pangu::train::Params<float> &b) {
    using pangu::train::Params;
    auto ta = tensors(const_cast<Params<float> &>(a)), tb = tensors(const_cast<Params<float> &>(b));
    ASSERT_EQ(ta.size(), tb.size());
    for (size_t i = 0; i < ta.size(); ++i) {
        ASSERT_EQ(ta[i].name, tb[i].name);
        ASSERT_EQ(ta[i].shape, tb[i].shape) << ta[i].name;
        EXPECT_EQ(std::memcmp(ta[i].data, tb[i].data, static_cast<size_t>(ta[i].size) * sizeof(float)), 0) << ta[i].name;
    }
}

}  // namespace pangu_test
