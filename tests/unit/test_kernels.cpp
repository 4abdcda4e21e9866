// Kernels: every vector path against the scalar reference on awkward sizes, and the invariances that
// speculative decoding depends on (a row's result is the same whatever the batch size or thread count).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "device/device.h"
#include "pangu/pangu.h"
#include "device/cpu/kernels.h"
#include "model/tensor.h"

using namespace pangu;

namespace {

std::vector<const kernels::Table *> vector_tables() {
    std::vector<const kernels::Table *> v;
    if (kernels::avx2()) v.push_back(kernels::avx2());
    if (kernels::avx512()) v.push_back(kernels::avx512());
    if (kernels::neon()) v.push_back(kernels::neon());
    return v;
}

std::vector<float> randv(size_t n, std::mt19937 &g, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

}  // namespace

TEST(Kernels, VectorPathsMatchScalarOnAwkwardSizes) {
    const auto tables = vector_tables();
    if (tables.empty()) GTEST_SKIP() << "no vector kernels on this CPU/build";
    std::mt19937 g(42);
    for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 192, 255, 1000, 1536}) {
        for (int nr = 1; nr <= 4; ++nr) {
            for (int64_t M : {1, 2, 3, 5}) {
                auto x = randv(M * n, g);
                auto w = randv(n * nr, g, 0.05f);
                std::vector<uint16_t> wb(w.size()), wh(w.size());
                std::vector<int8_t> wq(w.size());
                for (size_t i = 0; i < w.size(); ++i) {
                    wb[i] = f32_to_bf16(w[i]);
                    wh[i] = f32_to_f16(w[i]);
                    wq[i] = static_cast<int8_t>(static_cast<int>(g() % 255) - 127);
                }
                struct Case {
                    const char *name;
                    kernels::MatmulBlockFn kernels::Table::*fn;
                    const void *w;
                    float tol_scale;
                } cases[] = {{"f32", &kernels::Table::mm_f32, w.data(), 1},
                             {"bf16", &kernels::Table::mm_bf16, wb.data(), 1},
                             {"f16", &kernels::Table::mm_f16, wh.data(), 1},
                             {"i8", &kernels::Table::mm_i8, wq.data(), 127}};
                for (const auto *t : tables)
                    for (const auto &c : cases) {
                        std::vector<float> ref(M * 4), got(M * 4);
                        (kernels::scalar().*c.fn)(x.data(), n, M, c.w, n, n, nr, ref.data(), 4);
                        (t->*c.fn)(x.data(), n, M, c.w, n, n, nr, got.data(), 4);
                        const float tol = (1e-5f * std::sqrt(static_cast<float>(n)) + 1e-6f) * c.tol_scale;
                        for (int64_t m = 0; m < M; ++m)
                            for (int r = 0; r < nr; ++r)
                                EXPECT_NEAR(got[m * 4 + r], ref[m * 4 + r], tol)
                                    << t->name << " " << c.name << " n=" << n << " M=" << M << " nr=" << nr;
                    }
            }
        }
    }
}

// int8 weights against bf16 rows (W8A16 activations) by bf16 dot products: the scalar reference's results,
// the bits of a single row whatever the blocking, and rows that are not bf16 values reported as such.
TEST(Kernels, Int8BySixteenBitDotProductsMatchScalarAndAreBatchInvariant) {
    std::vector<const kernels::Table *> with;
    for (const auto *t : vector_tables())
        if (t->mm_i8_bx) with.push_back(t);
    if (with.empty()) GTEST_SKIP() << "no bf16 dot products on this CPU/build";
    std::mt19937 g(17);
    for (const auto *t : with)
        for (int64_t n : {1, 2, 7, 31, 32, 33, 63, 64, 100, 255, 1536}) {
            const int nr_all = 8;
            const int64_t M = 7, ldo = (n + 31) / 32 * 32;
            auto x = randv(M * n, g);
            for (auto &v : x) v = bf16_to_f32(f32_to_bf16(v));  // the activations, rounded as the forward does
            std::vector<int8_t> w(nr_all * n);
            for (auto &v : w) v = static_cast<int8_t>(static_cast<int>(g() % 255) - 127);
            std::vector<uint16_t> xb(M * ldo, 0xdead);
            std::vector<uint8_t> exact(M);
            t->pack_bx(x.data(), n, M, n, xb.data(), ldo, exact.data());
            for (int64_t m = 0; m < M; ++m) ASSERT_TRUE(exact[m]) << "n " << n << " row " << m;
            std::vector<float> all(M * 8), ref(M * 8);
            t->mm_i8_bx(xb.data(), ldo, M, w.data(), n, n, nr_all, all.data(), 8);
            kernels::scalar().mm_i8(x.data(), n, M, w.data(), n, n, nr_all, ref.data(), 8);
            const float tol = 1e-5f * std::sqrt(static_cast<float>(n)) * 127 + 1e-6f;
            for (int64_t m = 0; m < M; ++m)
                for (int r = 0; r < nr_all; ++r) {
                    EXPECT_NEAR(all[m * 8 + r], ref[m * 8 + r], tol) << t->name << " n " << n;
                    for (int64_t blk : {1, 2, 3, 5, 6}) {  // the same row inside blocks of other sizes
                        const int64_t m0 = std::max<int64_t>(0, std::min(m, M - blk));
                        std::vector<float> part(blk * 8);
                        t->mm_i8_bx(xb.data() + m0 * ldo, ldo, blk, w.data() + r * n, n, n, 1, part.data(), 8);
                        EXPECT_EQ(std::memcmp(&part[(m - m0) * 8], &all[m * 8 + r], 4), 0)
                            << t->name << " n " << n << " row " << m << " col " << r << " block " << blk;
                    }
                }
        }
    // a value that is not a bf16 value marks its row
    const auto *t = with[0];
    std::vector<float> x = {1.0f, 1.0f + 1.0f / 1024, 2.0f, 3.0f};  // row 0 exact, row 1 not
    std::vector<uint16_t> xb(2 * 32);
    std::vector<uint8_t> exact(2);
    t->pack_bx(x.data(), 2, 2, 2, xb.data(), 32, exact.data());
    EXPECT_FALSE(exact[0]);
    t->pack_bx(x.data() + 2, 2, 1, 2, xb.data(), 32, exact.data());
    EXPECT_TRUE(exact[0]);
    EXPECT_EQ(xb[0], f32_to_bf16(2.0f));
    EXPECT_EQ(xb[1], f32_to_bf16(3.0f));
}

TEST(Kernels, AttentionValuesMatchScalarAndAccumulateExactlyAcrossBlocks) {
    // Every cache element type: the vector kernels against the scalar reference, and a cut anywhere (a tile or
    // block edge) gives the bits of one call.
    std::mt19937 g(7);
    for (const auto *t : vector_tables()) {
        for (int32_t d : {8, 16, 32, 64, 128, 12, 20, 136}) {
            for (int32_t nq : {1, 2, 3, 5, 13}) {
                for (int64_t n_pos : {1, 2, 7, 33, 130}) {
                    const int64_t ld = d * 3, ldp = n_pos + 3, ldo = d + 5, ldvs = 3;
                    auto v = randv(n_pos * ld, g), p = randv(nq * ldp, g), init = randv(nq * ldo, g);
                    std::vector<uint16_t> vh(v.size()), vb(v.size());
                    std::vector<int8_t> vq(v.size());
                    for (size_t i = 0; i < v.size(); ++i) {
                        vh[i] = f32_to_f16(v[i]);
                        vb[i] = f32_to_bf16(v[i]);
                        vq[i] = static_cast<int8_t>(static_cast<int>(g() % 255) - 127);
                    }
                    const auto vs = randv(n_pos * ldvs, g, 0.01f);
                    const void *vdata[kernels::kKvElems] = {v.data(), vh.data(), vb.data(), vq.data()};
                    const size_t esize[kernels::kKvElems] = {4, 2, 2, 1};
                    const float tol[kernels::kKvElems] = {1e-4f, 1e-4f, 1e-4f, 2e-4f * 127};
                    for (int e = 0; e < kernels::kKvElems; ++e) {
                        auto o1 = init, o2 = init, o3 = init;
                        t->attn_values[e](p.data(), ldp, nq, vdata[e], ld, vs.data(), ldvs, n_pos, d, o1.data(), ldo);
                        kernels::scalar().attn_values[e](p.data(), ldp, nq, vdata[e], ld, vs.data(), ldvs, n_pos, d,
                                                         o2.data(), ldo);
                        for (int32_t j = 0; j < nq; ++j)
                            for (int32_t i = 0; i < d; ++i)
                                ASSERT_NEAR(o1[j * ldo + i], o2[j * ldo + i], tol[e] * std::sqrt(float(n_pos)))
                                    << t->name << " type " << e << " d=" << d << " nq=" << nq;
                        const int64_t cut = n_pos / 3;
                        const auto *vc = static_cast<const uint8_t *>(vdata[e]) + cut * ld * esize[e];
                        t->attn_values[e](p.data(), ldp, nq, vdata[e], ld, vs.data(), ldvs, cut, d, o3.data(), ldo);
                        t->attn_values[e](p.data() + cut, ldp, nq, vc, ld, vs.data() + cut * ldvs, ldvs, n_pos - cut, d,
                                          o3.data(), ldo);
                        ASSERT_EQ(std::memcmp(o1.data(), o3.data(), o1.size() * sizeof(float)), 0)
                            << t->name << " type " << e << " d=" << d;
                        // elements outside the d columns of each query are left alone
                        for (int32_t j = 0; j < nq; ++j)
                            for (int64_t i = d; i < ldo && j * ldo + i < int64_t(o1.size()); ++i)
                                ASSERT_EQ(o1[j * ldo + i], init[j * ldo + i]);
                    }
                }
            }
        }
        auto a = randv(77, g), b = randv(77, g);
        EXPECT_NEAR(t->dot(a.data(), b.data(), 77), kernels::scalar().dot(a.data(), b.data(), 77), 1e-4f);
    }
}

TEST(Kernels, AttentionScoresAreTheMatmulKernelsBits) {
    // attn_scores is a tile's worth of the table's mm kernel of that element type, bit for bit (so a score is
    // a dot product in the table's fixed order), and the scalar table's within rounding.
    std::mt19937 g(11);
    auto tables = vector_tables();
    tables.push_back(&kernels::scalar());
    for (const auto *t : tables) {
        const kernels::MatmulBlockFn mms[kernels::kKvElems] = {t->mm_f32, t->mm_f16, t->mm_bf16, t->mm_i8};
        const size_t esize[kernels::kKvElems] = {4, 2, 2, 1};
        for (int32_t d : {16, 32, 64, 128, 24, 136}) {
            for (int32_t nq : {1, 2, 3, 7}) {
                for (int64_t n : {1, 3, 4, 9, 64}) {
                    const int64_t ldk = d * 3 + 5, lds = n + 2;
                    auto q = randv(nq * d, g), kf = randv(n * ldk, g);
                    std::vector<uint16_t> kh(kf.size()), kb(kf.size());
                    std::vector<int8_t> kq(kf.size());
                    for (size_t i = 0; i < kf.size(); ++i) {
                        kh[i] = f32_to_f16(kf[i]);
                        kb[i] = f32_to_bf16(kf[i]);
                        kq[i] = static_cast<int8_t>(static_cast<int>(g() % 255) - 127);
                    }
                    const void *kd[kernels::kKvElems] = {kf.data(), kh.data(), kb.data(), kq.data()};
                    for (int e = 0; e < kernels::kKvElems; ++e) {
                        std::vector<float> got(nq * lds, -1.0f), want(nq * lds, -1.0f), ref(nq * lds, -1.0f);
                        t->attn_scores[e](q.data(), nq, d, kd[e], ldk, n, got.data(), lds);
                        for (int64_t r = 0; r < n; r += 8)
                            mms[e](q.data(), d, nq, static_cast<const uint8_t *>(kd[e]) + r * ldk * esize[e], ldk, d,
                                   static_cast<int>(std::min<int64_t>(8, n - r)), want.data() + r, lds);
                        kernels::scalar().attn_scores[e](q.data(), nq, d, kd[e], ldk, n, ref.data(), lds);
                        ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
                            << t->name << " type " << e << " d " << d << " nq " << nq << " n " << n;
                        for (size_t i = 0; i < got.size(); ++i)
                            ASSERT_NEAR(got[i], ref[i], (e == kernels::kKvI8 ? 127 : 1) * 1e-4f * std::sqrt(float(d)))
                                << t->name << " type " << e;
                    }
                }
            }
        }
    }
}

TEST(Kernels, ScalarAttentionValuesFoldTheInt8ScaleIntoTheWeight) {
    // The reference itself: p * scale once per row, times the widened element.
    const float p[2] = {0.5f, 0.25f}, vs[2] = {0.1f, 0.2f};
    const int8_t v[4] = {10, -20, 127, -127};
    float out[2] = {1.0f, 2.0f};
    kernels::scalar().attn_values[kernels::kKvI8](p, 2, 1, v, 2, vs, 1, 2, 2, out, 2);
    EXPECT_FLOAT_EQ(out[0], 1.0f + 0.5f * 0.1f * 10 + 0.25f * 0.2f * 127);
    EXPECT_FLOAT_EQ(out[1], 2.0f + 0.5f * 0.1f * -20 + 0.25f * 0.2f * -127);
}

TEST(Kernels, SoftmaxAndSwigluMatchScalar) {
    std::mt19937 g(13);
    for (const auto *t : vector_tables()) {
        for (int64_t n : {1, 5, 8, 15, 16, 17, 33, 100, 1000}) {
            auto x = randv(n, g, 8.0f), y = x;
            const float m1 = t->scale_max(x.data(), n, 0.7f), m2 = kernels::scalar().scale_max(y.data(), n, 0.7f);
            ASSERT_EQ(m1, m2) << t->name << " n=" << n;
            ASSERT_EQ(std::memcmp(x.data(), y.data(), n * sizeof(float)), 0);
            const float s1 = t->exp_sum(x.data(), n, m1), s2 = kernels::scalar().exp_sum(y.data(), n, m2);
            EXPECT_NEAR(s1, s2, 1e-5f * s2) << t->name << " n=" << n;
            for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(x[i], y[i], 3e-7f * (1 + y[i])) << t->name << " " << i;
            auto gv = randv(n, g, 6.0f), u = randv(n, g), gs = gv;
            t->swiglu(gv.data(), u.data(), n);
            kernels::scalar().swiglu(gs.data(), u.data(), n);
            for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(gv[i], gs[i], 1e-6f * (1 + std::fabs(gs[i]))) << t->name;
        }
        // far below the maximum: zero or a denormal (the x86 paths flush below e^-87.3, the NEON table calls
        // expf, which gives 3.8e-44 for e^-100); far above zero in SwiGLU: g * u; NaN propagates
        std::vector<float> x = {0.0f, -50.0f, -100.0f, -1000.0f, -INFINITY};
        t->exp_sum(x.data(), 5, 0.0f);
        EXPECT_EQ(x[0], 1.0f);
        EXPECT_NEAR(x[1], std::exp(-50.0f), 1e-27f);
        EXPECT_GE(x[2], 0.0f) << t->name;
        EXPECT_LT(x[2], 1e-37f) << t->name;
        EXPECT_EQ(x[3], 0.0f);
        EXPECT_EQ(x[4], 0.0f);
        std::vector<float> big = {200.0f, -200.0f}, one = {1.0f, 1.0f};
        t->swiglu(big.data(), one.data(), 2);
        EXPECT_EQ(big[0], 200.0f);
        EXPECT_NEAR(big[1], 0.0f, 1e-30f);
        std::vector<float> bad = {1.0f, NAN, 2.0f};
        const float mx = t->scale_max(bad.data(), 3, 1.0f);
        EXPECT_TRUE(std::isnan(t->exp_sum(bad.data(), 3, mx))) << t->name << ": NaN scores must not vanish";
        std::vector<float> gn = {NAN, 1.0f};
        t->swiglu(gn.data(), one.data(), 2);
        EXPECT_TRUE(std::isnan(gn[0])) << t->name;
    }
}

TEST(Kernels, RowResultsDoNotDependOnBlocking) {
    // A row's results must not depend on how many rows or weight rows share the call: the matmul groups
    // them differently depending on the batch and on how the range is split between threads (and reduces
    // four or one accumulator at a time depending on the group).
    std::mt19937 g(3);
    for (const kernels::Table *t : {&kernels::scalar(), kernels::avx2(), kernels::avx512(), kernels::neon()}) {
        if (!t) continue;
        for (int64_t n : {203, 32, 1536}) {
            for (int nr_all : {4, 8}) {
                for (int64_t M : {1, 5, 7}) {
                    auto x = randv(M * n, g);
                    std::vector<uint16_t> w(nr_all * n);
                    for (auto &v : w) v = f32_to_bf16(randv(1, g)[0]);
                    std::vector<float> all(M * 8);
                    t->mm_bf16(x.data(), n, M, w.data(), n, n, nr_all, all.data(), 8);
                    for (int64_t m = 0; m < M; ++m)
                        for (int r = 0; r < nr_all; ++r) {
                            float one;
                            t->mm_bf16(x.data() + m * n, n, 1, w.data() + r * n, n, n, 1, &one, 1);
                            EXPECT_EQ(std::memcmp(&one, &all[m * 8 + r], 4), 0)
                                << t->name << " n " << n << " nr " << nr_all << " M " << M << " row " << m << " col " << r;
                        }
                }
            }
        }
    }
}

// ---- integer activations (W8A8, W4A8) ----

namespace {

// Every table with integer kernels of its own: the vector tables and their variants without the dot-product
// extensions (kernels.h), each once, with a label for messages.
std::vector<std::pair<std::string, const kernels::Table *>> int_tables() {
    std::vector<std::pair<std::string, const kernels::Table *>> v;
    const std::pair<const char *, const kernels::Table *> all[] = {
        {"avx2", kernels::avx2()},     {"avx2-novnni", kernels::avx2_novnni()},
        {"avx512", kernels::avx512()}, {"avx512-novnni", kernels::avx512_novnni()},
        {"neon", kernels::neon()},     {"neon-nodot", kernels::neon_nodot()}};
    for (const auto &a : all) {
        if (!a.second) continue;
        bool dup = false;
        for (const auto &b : v)
            dup = dup || (b.second->quant_rows == a.second->quant_rows && b.second->mm_q8 == a.second->mm_q8 &&
                          b.second->mm_q4 == a.second->mm_q4 && b.second->mm_qb == a.second->mm_qb);
        if (!dup) v.emplace_back(a.first, a.second);
    }
    return v;
}

int64_t round64(int64_t n) { return (n + 63) / 64 * 64; }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// Rows of int8 activations, zero-padded to a multiple of 64 as quant_rows leaves them; any int8 value, -128
// included (quant_rows16's digits).
std::vector<int8_t> q_rows(int64_t M, int64_t n, std::mt19937 &g) {
    std::vector<int8_t> x(M * round64(n), 0);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < n; ++i) x[m * round64(n) + i] = static_cast<int8_t>(int(g() % 256) - 128);
    return x;
}

// Extreme activations for extreme weights: row m holds -128 (m % 4 == 0), +-127 alternating (1), 127 (2), 0 (3).
void extreme_rows(std::vector<int8_t> &x, int64_t M, int64_t n, int64_t ldx) {
    for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < n; ++i)
            x[m * ldx + i] = static_cast<int8_t>(m % 4 == 0   ? -128
                                                 : m % 4 == 1 ? (i % 2 ? 127 : -127)
                                                 : m % 4 == 2 ? 127
                                                              : 0);
}

// One PGD_I4 row from nibbles v[k] in [0, 15] (device.h: byte j of a run holds column j low, j + 32 high).
void pack_i4(const uint8_t *v, int64_t n, uint8_t *out) {
    for (int64_t k = 0; k < n; ++k) {
        uint8_t &b = out[(k / 64) * 32 + k % 32];
        b = static_cast<uint8_t>(k % 64 < 32 ? (b & 0xf0) | v[k] : (b & 0x0f) | (v[k] << 4));
    }
}

}  // namespace

TEST(IntKernels, QuantRowsAreBitIdenticalToScalar) {
    const auto tables = int_tables();
    if (tables.empty()) GTEST_SKIP() << "no vector kernels on this CPU/build";
    std::printf("integer kernels against the scalar reference:");
    for (const auto &t : tables) std::printf(" %s", t.first.c_str());
    std::printf("\n");
    std::mt19937 g(31);
    // rows by kind: random (several magnitudes), zeros, -0, ties (x * inv a half-integer), NaN or Inf at a
    // position, tiny (127 / amax overflows to Inf), huge
    const int kKinds = 12;
    for (int64_t n : {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 1536, 8960}) {
        const int64_t M = kKinds, ldx = n + 3, ldq = round64(n);
        std::vector<float> x(M * ldx, 1e30f);  // between rows: values a kernel must not read
        for (int64_t m = 0; m < M; ++m) {
            float *r = &x[m * ldx];
            const int64_t at = static_cast<int64_t>(g() % n);
            for (int64_t i = 0; i < n; ++i) {
                switch (m) {
                    case 0: r[i] = randv(1, g)[0]; break;
                    case 1: r[i] = randv(1, g, 1e-3f)[0]; break;
                    case 2: r[i] = randv(1, g, 3e4f)[0]; break;
                    case 3: r[i] = 0.0f; break;
                    case 4: r[i] = -0.0f; break;
                    case 5: r[i] = (i == at ? 127.0f : static_cast<float>(int(g() % 255) - 127) + 0.5f); break;
                    case 6: r[i] = i == at ? NAN : randv(1, g)[0]; break;
                    case 7: r[i] = i == at ? INFINITY : randv(1, g)[0]; break;
                    case 8: r[i] = i == at ? -INFINITY : 0.0f; break;
                    case 9: r[i] = randv(1, g, 1e-39f)[0]; break;  // denormals
                    case 10: r[i] = i == at ? 3e38f : randv(1, g, 1e37f)[0]; break;
                    default: r[i] = (i % 2 ? -1.0f : 1.0f) * static_cast<float>(i % 255 - 127) / 2.0f; break;
                }
            }
        }
        std::vector<int8_t> ref(M * ldq, 0x55);
        std::vector<float> sref(M);
        kernels::scalar().quant_rows(x.data(), ldx, M, n, ref.data(), ldq, sref.data());
        // the denormal row: 127 / amax is not finite, so it quantizes to zeros with scale 0 (no Inf cast to int)
        EXPECT_EQ(sref[9], 0.0f) << "n " << n;
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(ref[9 * ldq + i], 0) << "n " << n << " at " << i;
        for (const auto &t : tables) {
            for (int64_t blk : {M, int64_t(1), int64_t(5)}) {  // all rows at once, one at a time, in fives
                std::vector<int8_t> q(M * ldq, 0x55);
                std::vector<float> sc(M, 1.0f);
                for (int64_t m0 = 0; m0 < M; m0 += blk) {
                    const int64_t mr = std::min(blk, M - m0);
                    t.second->quant_rows(&x[m0 * ldx], ldx, mr, n, &q[m0 * ldq], ldq, &sc[m0]);
                }
                for (int64_t m = 0; m < M; ++m) {
                    EXPECT_TRUE(same_bits(sc[m], sref[m]) || (std::isnan(sc[m]) && std::isnan(sref[m])))
                        << t.first << " n " << n << " row kind " << m << ": scale " << sc[m] << " vs " << sref[m];
                    for (int64_t i = 0; i < ldq; ++i)
                        ASSERT_EQ(q[m * ldq + i], ref[m * ldq + i])
                            << t.first << " n " << n << " row kind " << m << " at " << i << " (x "
                            << (i < n ? x[m * ldx + i] : 0.0f) << ")";
                }
            }
        }
    }
}

// Int16 digits of a row too small for 32639 / amax to be finite (a fuzzed model's subnormal activations): zeros
// and scale 0, where the multiplier used to be Inf and the cast of Inf to an integer undefined (UBSan).
TEST(IntKernels, Int16RowsTooSmallToScaleQuantizeToZeros) {
    for (float tiny : {1e-35f, 1e-38f, 1e-41f, -1e-44f}) {
        const int64_t n = 70, ldq = 128;
        std::vector<float> x(n, 0.0f);
        x[3] = tiny, x[40] = tiny / 2;
        std::vector<int8_t> q(2 * ldq, 0x55);
        float scale = 1.0f;
        kernels::quant_rows16(x.data(), n, 1, n, q.data(), ldq, &scale);
        EXPECT_EQ(scale, 0.0f) << tiny;
        for (int8_t v : q) ASSERT_EQ(v, 0) << tiny;
    }
    // just above the limit the row still quantizes: its largest value becomes 32639
    const float small = 1e-33f;
    std::vector<float> x(64, 0.0f);
    x[0] = small;
    std::vector<int8_t> q(128, 0);
    float scale = 0.0f;
    kernels::quant_rows16(x.data(), 64, 1, 64, q.data(), 64, &scale);
    EXPECT_GT(scale, 0.0f);
    EXPECT_EQ(256 * q[0] + q[64], 32639);
}

TEST(IntKernels, Int8ProductsAreExactInEveryTable) {
    const auto tables = int_tables();
    if (tables.empty()) GTEST_SKIP() << "no vector kernels on this CPU/build";
    std::mt19937 g(32);
    for (int64_t n : {1, 3, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 1000, 1536, 8960}) {
        const int64_t ldx = round64(n), maxM = 13;
        // weight kinds: random over all of int8, all -128, all 127, alternating +-127 and -128
        for (int kind = 0; kind < 4; ++kind) {
            auto x = q_rows(maxM, n, g);
            if (kind > 0) extreme_rows(x, maxM, n, ldx);
            std::vector<int8_t> w(8 * n);  // rows n apart, unpadded: the tail is read with care
            for (int64_t i = 0; i < 8 * n; ++i)
                w[i] = static_cast<int8_t>(kind == 0    ? int(g() % 256) - 128
                                           : kind == 1  ? -128
                                           : kind == 2  ? 127
                                           : i % 3 == 0 ? -128
                                           : i % 2      ? 127
                                                        : -127);
            for (int nr = 1; nr <= 8; ++nr) {
                std::vector<int32_t> ref(maxM * 8);
                kernels::scalar().mm_q8(x.data(), ldx, maxM, w.data(), n, n, nr, ref.data(), 8);
                for (const auto &t : tables)
                    for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 13}) {
                        std::vector<int32_t> y(maxM * 8, 0x5a5a5a5a);
                        // the last M rows, so that a row's place in the block varies
                        t.second->mm_q8(&x[(maxM - M) * ldx], ldx, M, w.data(), n, n, nr, y.data(), 8);
                        for (int64_t m = 0; m < M; ++m)
                            for (int r = 0; r < 8; ++r)
                                ASSERT_EQ(y[m * 8 + r], r < nr ? ref[(maxM - M + m) * 8 + r] : 0x5a5a5a5a)
                                    << t.first << " n " << n << " kind " << kind << " nr " << nr << " M " << M
                                    << " row " << m << " col " << r;
                    }
            }
        }
    }
}

// W4A8: within a tight tolerance of the scalar reference (each table adds the scaled group sums in its own
// fp32 order), and each table's bits for a row and weight row the same whatever the blocking.
TEST(IntKernels, FourBitProductsMatchScalarAndAreBatchInvariant) {
    const auto tables = int_tables();
    if (tables.empty()) GTEST_SKIP() << "no vector kernels on this CPU/build";
    std::mt19937 g(33);
    const std::pair<int64_t, int> shapes[] = {
        {64, 32},  {64, 64},   {128, 32},  {128, 128},  {192, 64},   {192, 96},  {256, 256}, {384, 192},  {320, 32},
        {320, 64}, {1536, 32}, {1536, 64}, {1536, 128}, {1536, 512}, {8960, 32}, {8960, 64}, {8960, 128}, {8960, 1280}};
    for (const auto &sh : shapes) {
        const int64_t n = sh.first, ng = n / sh.second, ldx = n, ldw = n / 2, maxM = 13;
        const int group = sh.second;
        for (int kind = 0; kind < 3; ++kind) {  // random nibbles, all 0 (-8), all 15 (+7)
            auto x = q_rows(maxM, n, g);
            if (kind > 0) extreme_rows(x, maxM, n, ldx);
            std::vector<uint8_t> w(8 * ldw, 0), v(n);
            std::vector<float> s(8 * ng);
            for (int r = 0; r < 8; ++r) {
                for (auto &b : v) b = static_cast<uint8_t>(kind == 0 ? g() % 16 : kind == 1 ? 0 : 15);
                pack_i4(v.data(), n, &w[r * ldw]);
            }
            for (auto &f : s) f = randv(1, g, 0.01f)[0];
            for (int nr = 1; nr <= 8; ++nr) {
                std::vector<float> ref(maxM * 8);
                kernels::scalar().mm_q4(x.data(), ldx, maxM, w.data(), ldw, s.data(), ng, n, group, nr, ref.data(), 8);
                for (const auto &t : tables) {
                    std::vector<float> all(maxM * 8);
                    t.second->mm_q4(x.data(), ldx, maxM, w.data(), ldw, s.data(), ng, n, group, nr, all.data(), 8);
                    for (int64_t m = 0; m < maxM; ++m)
                        for (int r = 0; r < nr; ++r) {
                            // The same exact group sums, scaled and added in fp32 in another order: each order
                            // rounds at most once per group (and per level of a lane tree), each rounding at most
                            // 2^-24 of the running sum, itself at most the sum of the terms' magnitudes.
                            double mag = 0;
                            for (int64_t k = 0; k < n; ++k) {
                                const uint8_t b = w[r * ldw + (k / 64) * 32 + k % 32];
                                const int vk = (k % 64 < 32 ? b & 15 : b >> 4) - 8;
                                mag += std::fabs(double(x[m * ldx + k]) * vk * s[r * ng + k / group]);
                            }
                            ASSERT_NEAR(all[m * 8 + r], ref[m * 8 + r], (ng + 16) * std::ldexp(mag, -24))
                                << t.first << " n " << n << " group " << group << " kind " << kind << " nr " << nr
                                << " row " << m << " col " << r;
                        }
                    for (int64_t M : {1, 2, 3, 5, 6, 7}) {  // rows [m0, m0 + M) against weight rows [c, nr)
                        const int64_t m0 = static_cast<int64_t>(g() % (maxM - M + 1));
                        const int c = static_cast<int>(g() % nr);
                        std::vector<float> part(M * 8);
                        t.second->mm_q4(&x[m0 * ldx], ldx, M, &w[c * ldw], ldw, &s[c * ng], ng, n, group, nr - c,
                                        part.data(), 8);
                        for (int64_t m = 0; m < M; ++m)
                            for (int r = 0; r < nr - c; ++r)
                                ASSERT_TRUE(same_bits(part[m * 8 + r], all[(m0 + m) * 8 + c + r]))
                                    << t.first << " n " << n << " group " << group << " nr " << nr << ": row " << m0 + m
                                    << " col " << c + r << " in a block of " << M << " x " << nr - c << ": "
                                    << part[m * 8 + r] << " vs " << all[(m0 + m) * 8 + c + r];
                    }
                }
            }
        }
    }
}

// ---- low-bit weights (PGD_QB) ----

namespace {

// One PGD_QB row of `bits` bits from levels u[k] < 2^bits, written from device.h's description of the planes
// (not from pgd_qb_level, which LowBitScalarReferenceMatchesDequantizedWeights checks against this).
void pack_qb(const uint8_t *u, int64_t n, int bits, uint8_t *out) {
    std::memset(out, 0, static_cast<size_t>(n / 8 * bits));
    const auto plane4 = [](uint8_t *p, int c, int v) { p[c % 32] |= static_cast<uint8_t>(v << (4 * (c / 32))); };
    const auto plane2 = [](uint8_t *p, int c, int v) { p[c % 16] |= static_cast<uint8_t>(v << (2 * (c / 16))); };
    const auto plane1 = [](uint8_t *p, int c, int v) { p[c / 8] |= static_cast<uint8_t>(v << (c % 8)); };
    for (int64_t k = 0; k < n; ++k) {
        uint8_t *run = out + (k / 64) * 8 * bits;
        const int c = static_cast<int>(k % 64), v = u[k];
        switch (bits) {
            case 8: run[c] = static_cast<uint8_t>(v); break;
            case 6: plane4(run, c, v & 15), plane2(run + 32, c, v >> 4); break;
            case 4: plane4(run, c, v); break;
            case 3: plane2(run, c, v & 3), plane1(run + 16, c, v >> 2); break;
            default: plane2(run, c, v); break;
        }
    }
}

// Weight rows of one width with their levels, scales and zero points: random levels and zero points (kind 0),
// every level 0 with the largest zero point (1), every level 2^bits - 1 with zero point 0 (2).
struct QbRows {
    int bits, group, nrows;
    int64_t n, ng, ldw;
    std::vector<uint8_t> u, w, z;  // levels [nrows][n], packed rows, zero points [nrows][ng]
    std::vector<float> s;

    QbRows(int bits_, int64_t n_, int group_, int nrows_, int kind, std::mt19937 &g)
        : bits(bits_),
          group(group_),
          nrows(nrows_),
          n(n_),
          ng(n_ / group_),
          ldw(n_ / 8 * bits_),
          u(nrows_ * n_),
          w(nrows_ * ldw),
          z(nrows_ * ng),
          s(nrows_ * ng) {
        const int top = (1 << bits) - 1;
        for (auto &v : u) v = static_cast<uint8_t>(kind == 0 ? int(g() % (top + 1)) : kind == 1 ? 0 : top);
        for (auto &v : z) v = static_cast<uint8_t>(kind == 0 ? int(g() % (top + 1)) : kind == 1 ? top : 0);
        for (auto &f : s) f = randv(1, g, 0.01f)[0];
        for (int r = 0; r < nrows; ++r) pack_qb(&u[r * n], n, bits, &w[r * ldw]);
    }
    int zp(int r, int64_t gi, bool with_z) const { return with_z ? z[r * ng + gi] : 1 << (bits - 1); }
    const uint8_t *zero(bool with_z) const { return with_z ? z.data() : nullptr; }
    // sum over k of x[k] * (u - zp) * s in double, and the sum of the terms' magnitudes
    std::pair<double, double> dequant_dot(const int8_t *x, int r, bool with_z) const {
        double sum = 0, mag = 0;
        for (int64_t k = 0; k < n; ++k) {
            const double t = double(x[k]) * (int(u[r * n + k]) - zp(r, k / group, with_z)) * s[r * ng + k / group];
            sum += t, mag += std::fabs(t);
        }
        return {sum, mag};
    }
};

// The tolerance of FourBitProductsMatchScalarAndAreBatchInvariant: exact group sums added in fp32 in two orders,
// each rounding at most once per group (and per level of a lane tree) by at most 2^-24 of the running sum.
double qb_tolerance(const QbRows &q, double mag) { return double(q.ng + 16) * std::ldexp(mag, -24); }

}  // namespace

// The scalar reference itself: pgd_qb_level reads back the levels packed from device.h's description, and
// mm_qb_scalar agrees with the dequantized weights (u - z) * s summed in double.
TEST(IntKernels, LowBitScalarReferenceMatchesDequantizedWeights) {
    std::mt19937 g(34);
    for (int bits : {2, 3, 4, 6, 8})
        for (const auto &sh : {std::pair<int64_t, int>{64, 32}, {192, 96}, {512, 128}, {1536, 256}, {6144, 64}})
            for (int kind = 0; kind < 3; ++kind)
                for (bool with_z : {false, true}) {
                    const int64_t n = sh.first, maxM = 5;
                    const QbRows q(bits, n, sh.second, 3, kind, g);
                    for (int r = 0; r < q.nrows; ++r)
                        for (int64_t k = 0; k < n; ++k)
                            ASSERT_EQ(pgd_qb_level(&q.w[r * q.ldw], bits, k), q.u[r * n + k])
                                << "bits " << bits << " column " << k;
                    auto x = q_rows(maxM, n, g);
                    if (kind > 0) extreme_rows(x, maxM, n, n);
                    std::vector<float> y(maxM * 8);
                    kernels::scalar().mm_qb(x.data(), n, maxM, q.w.data(), q.ldw, bits, q.s.data(), q.zero(with_z),
                                            q.ng, n, q.group, q.nrows, y.data(), 8);
                    for (int64_t m = 0; m < maxM; ++m)
                        for (int r = 0; r < q.nrows; ++r) {
                            const auto d = q.dequant_dot(&x[m * n], r, with_z);
                            ASSERT_NEAR(y[m * 8 + r], d.first, qb_tolerance(q, d.second))
                                << "bits " << bits << " n " << n << " group " << q.group << " kind " << kind
                                << " zero points " << with_z << " row " << m << " col " << r;
                        }
                }
}

// Every table's mm_qb against the scalar reference (the tolerance of the 4-bit test), and each table's bits for a
// row and weight row the same whatever the block of rows and weight rows around them: every width, with and
// without zero points, groups of 32 to 256 columns (and 96, and one group per row), n up to 6144, blocks of
// 1-8 rows, 1-8 weight rows; rows of x hold -128 (random rows, and the extreme rows of the extreme levels).
TEST(IntKernels, LowBitProductsMatchScalarAndAreBatchInvariant) {
    const auto tables = int_tables();
    if (tables.empty()) GTEST_SKIP() << "no vector kernels on this CPU/build";
    std::mt19937 g(35);
    const std::pair<int64_t, int> shapes[] = {
        {64, 32},   {64, 64},    {128, 128},  {192, 96},  {256, 32},  {256, 256},  {384, 128},  {512, 64},
        {1536, 32}, {1536, 128}, {1536, 256}, {6144, 32}, {6144, 64}, {6144, 128}, {6144, 256}, {1024, 1024}};
    for (int bits : {2, 3, 4, 6, 8})
        for (const auto &sh : shapes)
            for (int kind = 0; kind < 3; ++kind) {
                const int64_t n = sh.first, maxM = 13;
                if (kind > 0 && n > 1536) continue;  // the extreme kinds on the smaller shapes
                const QbRows q(bits, n, sh.second, 8, kind, g);
                auto x = q_rows(maxM, n, g);
                if (kind > 0) extreme_rows(x, maxM, n, n);
                for (bool with_z : {false, true}) {
                    std::vector<float> ref(maxM * 8), mag(maxM * 8);
                    kernels::scalar().mm_qb(x.data(), n, maxM, q.w.data(), q.ldw, bits, q.s.data(), q.zero(with_z),
                                            q.ng, n, q.group, 8, ref.data(), 8);
                    for (int64_t m = 0; m < maxM; ++m)
                        for (int r = 0; r < 8; ++r) mag[m * 8 + r] = q.dequant_dot(&x[m * n], r, with_z).second;
                    for (const auto &t : tables)
                        for (int nr = 1; nr <= 8; ++nr) {
                            const std::string what = t.first + " bits " + std::to_string(bits) + " n " +
                                                     std::to_string(n) + " group " + std::to_string(q.group) +
                                                     " kind " + std::to_string(kind) + " zero points " +
                                                     std::to_string(with_z) + " nr " + std::to_string(nr);
                            std::vector<float> all(maxM * 8, -1.0f);
                            t.second->mm_qb(x.data(), n, maxM, q.w.data(), q.ldw, bits, q.s.data(), q.zero(with_z),
                                            q.ng, n, q.group, nr, all.data(), 8);
                            for (int64_t m = 0; m < maxM; ++m)
                                for (int r = 0; r < 8; ++r)
                                    if (r < nr)
                                        ASSERT_NEAR(all[m * 8 + r], ref[m * 8 + r], qb_tolerance(q, mag[m * 8 + r]))
                                            << what << " row " << m << " col " << r;
                                    else ASSERT_EQ(all[m * 8 + r], -1.0f) << what << ": wrote col " << r;
                            for (int64_t M = 1; M <= 8; ++M) {  // rows [m0, m0 + M) against weight rows [c, nr)
                                const int64_t m0 = static_cast<int64_t>(g() % (maxM - M + 1));
                                const int c = static_cast<int>(g() % nr);
                                std::vector<float> part(M * 8);
                                t.second->mm_qb(&x[m0 * n], n, M, &q.w[c * q.ldw], q.ldw, bits, &q.s[c * q.ng],
                                                with_z ? &q.z[c * q.ng] : nullptr, q.ng, n, q.group, nr - c,
                                                part.data(), 8);
                                for (int64_t m = 0; m < M; ++m)
                                    for (int r = 0; r < nr - c; ++r)
                                        ASSERT_TRUE(same_bits(part[m * 8 + r], all[(m0 + m) * 8 + c + r]))
                                            << what << ": row " << m0 + m << " col " << c + r << " in a block of " << M
                                            << " x " << nr - c << ": " << part[m * 8 + r] << " vs "
                                            << all[(m0 + m) * 8 + c + r];
                            }
                        }
                }
            }
}

namespace {

struct Dev {
    pgd_device *d = pgd_device_create("cpu", nullptr, nullptr, nullptr, 0);
    ~Dev() { d->destroy(d); }
};

pgd_tensor view(float *p, int64_t rows, int64_t cols) {
    pgd_tensor t{};
    t.data = p;
    t.dtype = PGD_F32;
    t.rows = rows;
    t.cols = cols;
    t.stride = cols;
    return t;
}

// dev's matmul with the workspace it asks for.
// A bias as the device takes it: an F32 vector [1, n]; null for none.
pgd_tensor vec(const float *v, int64_t n) {
    pgd_tensor t = view(const_cast<float *>(v), 1, n);
    if (!v) t.data = nullptr;
    return t;
}

int matmul(const Dev &dev, pgd_stream *s, const pgd_tensor *x, const pgd_tensor *w, const float *bias, pgd_tensor *y) {
    const size_t ws = dev.d->matmul_workspace(dev.d->ctx, x, w);
    std::vector<float> buf((ws + 3) / 4);
    const pgd_tensor b = vec(bias, w->rows);
    return dev.d->matmul(dev.d->ctx, s, x, w, bias ? &b : nullptr, y, buf.data(), ws);
}

}  // namespace

TEST(CpuDevice, MatmulIsBatchAndThreadInvariant) {
    Dev dev;
    std::mt19937 g(11);
    const int64_t K = 333, N = 77;
    auto wf = randv(N * K, g, 0.1f);
    std::vector<uint16_t> wb(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) wb[i] = f32_to_bf16(wf[i]);
    pgd_tensor w{};
    w.data = wb.data();
    w.dtype = PGD_BF16;
    w.rows = N;
    w.cols = K;
    w.stride = K;
    auto bias = randv(N, g);
    auto x = randv(9 * K, g);

    std::vector<float> ref(9 * N);
    for (int threads : {1, 2, 3}) {
        pgd_stream *s = nullptr;
        ASSERT_EQ(dev.d->stream_create(dev.d->ctx, threads, &s), 0);
        for (int64_t M : {1, 2, 5, 9}) {
            // each batch covers rows [0, M) of x; compare every row with the M = 1 result of that row
            std::vector<float> y(M * N);
            pgd_tensor xt = view(x.data(), M, K), yt = view(y.data(), M, N);
            ASSERT_EQ(matmul(dev, s, &xt, &w, bias.data(), &yt), 0);
            for (int64_t m = 0; m < M; ++m) {
                std::vector<float> one(N);
                pgd_tensor x1 = view(x.data() + m * K, 1, K), y1 = view(one.data(), 1, N);
                ASSERT_EQ(matmul(dev, s, &x1, &w, bias.data(), &y1), 0);
                ASSERT_EQ(std::memcmp(one.data(), y.data() + m * N, N * sizeof(float)), 0)
                    << "row " << m << " of a batch of " << M << " with " << threads << " threads";
                if (threads == 1 && M == 9) std::memcpy(ref.data() + m * N, one.data(), N * sizeof(float));
            }
            if (threads > 1 && M == 9) {
                EXPECT_EQ(std::memcmp(ref.data(), y.data(), ref.size() * 4), 0);
            }
        }
        dev.d->stream_destroy(dev.d->ctx, s);
    }
}

TEST(CpuDevice, Int8MatmulAppliesPerChannelScalesAndIsBatchInvariant) {
    Dev dev;
    std::mt19937 g(21);
    const int64_t M = 6, K = 261, N = 35;
    auto x = randv(M * K, g);
    // rows 0, 2 and 3 bf16 values (W8A16 activations: bf16 dot products where the CPU has them), the others
    // not: each row must give its bits whichever rows share its batch
    for (int64_t m : {0, 2, 3})
        for (int64_t k = 0; k < K; ++k) x[m * K + k] = bf16_to_f32(f32_to_bf16(x[m * K + k]));
    std::vector<int8_t> q(N * K);
    for (auto &v : q) v = static_cast<int8_t>(static_cast<int>(g() % 255) - 127);
    auto sc = randv(N, g, 0.01f);
    for (auto &v : sc) v = std::fabs(v);
    auto bias = randv(N, g);
    pgd_tensor w{};
    w.data = q.data();
    w.dtype = PGD_I8;
    w.rows = N;
    w.cols = K;
    w.stride = K;
    w.scale = sc.data();
    pgd_stream *s = nullptr;
    ASSERT_EQ(dev.d->stream_create(dev.d->ctx, 2, &s), 0);
    std::vector<float> y(M * N);
    pgd_tensor xt = view(x.data(), M, K), yt = view(y.data(), M, N);
    ASSERT_EQ(matmul(dev, s, &xt, &w, bias.data(), &yt), 0);
    for (int64_t m = 0; m < M; ++m) {
        std::vector<float> one(N);
        pgd_tensor x1 = view(x.data() + m * K, 1, K), y1 = view(one.data(), 1, N);
        ASSERT_EQ(matmul(dev, s, &x1, &w, bias.data(), &y1), 0);
        EXPECT_EQ(std::memcmp(one.data(), y.data() + m * N, N * 4), 0) << "row " << m;
        for (int64_t n = 0; n < N; ++n) {
            double r = 0;
            for (int64_t k = 0; k < K; ++k) r += double(x[m * K + k]) * q[n * K + k] * sc[n];
            EXPECT_NEAR(y[m * N + n], r + bias[n], 1e-3);
        }
    }
    // a kernel table with bf16 dot products packs x in the workspace it asked for
    if (const size_t ws = dev.d->matmul_workspace(dev.d->ctx, &xt, &w)) {
        std::vector<float> small(ws / 4);
        const pgd_tensor bt = vec(bias.data(), w.rows);
        EXPECT_EQ(dev.d->matmul(dev.d->ctx, s, &xt, &w, &bt, &yt, small.data(), ws - 1), PANGU_ERR_BUFFER_TOO_SMALL);
        EXPECT_EQ(dev.d->matmul(dev.d->ctx, s, &xt, &w, &bt, &yt, nullptr, 0), PANGU_ERR_BUFFER_TOO_SMALL);
    }
    // group-wise scales are not implemented by this backend: refused, not misread
    w.group_size = 32;
    EXPECT_EQ(matmul(dev, s, &xt, &w, bias.data(), &yt), PANGU_ERR_UNSUPPORTED);
    dev.d->stream_destroy(dev.d->ctx, s);
}

TEST(CpuDevice, MatmulMatchesDoubleReference) {
    Dev dev;
    std::mt19937 g(5);
    const int64_t M = 3, K = 130, N = 19;
    auto x = randv(M * K, g), w = randv(N * K, g);
    pgd_tensor xt = view(x.data(), M, K), wt = view(w.data(), N, K);
    std::vector<float> y(M * N);
    pgd_tensor yt = view(y.data(), M, N);
    pgd_stream *s = nullptr;
    ASSERT_EQ(dev.d->stream_create(dev.d->ctx, 2, &s), 0);
    ASSERT_EQ(matmul(dev, s, &xt, &wt, nullptr, &yt), 0);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double r = 0;
            for (int64_t k = 0; k < K; ++k) r += double(x[m * K + k]) * w[n * K + k];
            EXPECT_NEAR(y[m * N + n], r, 1e-4);
        }
    dev.d->stream_destroy(dev.d->ctx, s);
}

TEST(CpuDevice, AttentionIsCausalAndBatchInvariant) {
    Dev dev;
    std::mt19937 g(9);
    const int32_t H = 4, HKV = 2, D = 16;
    const int64_t C = 12, QD = H * D, KVD = HKV * D;
    auto kc = randv(C * KVD, g), vc = randv(C * KVD, g), q = randv(6 * QD, g);
    pgd_tensor kt = view(kc.data(), C, KVD), vt = view(vc.data(), C, KVD);
    pgd_stream *s = nullptr;
    ASSERT_EQ(dev.d->stream_create(dev.d->ctx, 2, &s), 0);
    const int64_t pos0 = 3;
    std::vector<float> all(6 * QD);
    pgd_tensor qt = view(q.data(), 6, QD), ot = view(all.data(), 6, QD);
    ASSERT_EQ(dev.d->attention(dev.d->ctx, s, &qt, &kt, &vt, pos0, H, HKV, D, 0.25f, &ot, nullptr, 0), 0);
    for (int64_t m = 0; m < 6; ++m) {
        std::vector<float> one(QD);
        pgd_tensor q1 = view(q.data() + m * QD, 1, QD), o1 = view(one.data(), 1, QD);
        ASSERT_EQ(dev.d->attention(dev.d->ctx, s, &q1, &kt, &vt, pos0 + m, H, HKV, D, 0.25f, &o1, nullptr, 0), 0);
        EXPECT_EQ(std::memcmp(one.data(), all.data() + m * QD, QD * 4), 0) << "row " << m;
        // Reference in double: row m attends to cache rows 0..pos0+m only.
        for (int32_t h = 0; h < H; ++h) {
            const int32_t hk = h / (H / HKV);
            std::vector<double> p(pos0 + m + 1);
            double mx = -1e30, sum = 0;
            for (int64_t t = 0; t <= pos0 + m; ++t) {
                double dot = 0;
                for (int32_t i = 0; i < D; ++i) dot += double(q[m * QD + h * D + i]) * kc[t * KVD + hk * D + i];
                p[t] = dot * 0.25;
                mx = std::max(mx, p[t]);
            }
            for (auto &v : p) sum += (v = std::exp(v - mx));
            for (int32_t i = 0; i < D; ++i) {
                double o = 0;
                for (int64_t t = 0; t <= pos0 + m; ++t) o += p[t] / sum * vc[t * KVD + hk * D + i];
                EXPECT_NEAR(all[m * QD + h * D + i], o, 1e-5);
            }
        }
    }
    dev.d->stream_destroy(dev.d->ctx, s);
}

TEST(Half, F16RoundTripAndRounding) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = f16_to_f32(static_cast<uint16_t>(h));
        if (std::isnan(f)) continue;
        EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
    }
    EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
    EXPECT_EQ(f32_to_f16(70000.0f), 0x7c00);   // overflow to inf
    EXPECT_EQ(f32_to_f16(1e-8f), 0x0000);      // underflow to zero
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
}
