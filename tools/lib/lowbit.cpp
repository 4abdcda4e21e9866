#include "lowbit.h"

#include <Eigen/Cholesky>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <iterator>
#include <mutex>
#include <numeric>
#include <queue>
#include <thread>

#include "common/common.h"
#include "model/tensor.h"  // f32_to_f16, f16_to_f32

namespace pangu {

bool lowbit_width_ok(int bits) {
    for (const int b : kLowBitWidths)
        if (b == bits) return true;
    return false;
}

namespace {

// ---- checks ----

[[noreturn]] void non_finite(const std::string &what, double v, int64_t r, int64_t c) {
    fail(PANGU_ERR_NUMERIC, what + ": " + (std::isnan(v) ? "NaN" : "Inf") + " at row " + std::to_string(r) +
                                ", column " + std::to_string(c) + "; refusing to quantize it");
}

template <class M>
void check_finite(const M &m, const std::string &what) {
    if (m.allFinite()) return;  // the common case in one vectorized pass; then find the element to name
    for (Eigen::Index r = 0; r < m.rows(); ++r)
        for (Eigen::Index c = 0; c < m.cols(); ++c)
            if (!std::isfinite(m(r, c))) non_finite(what, m(r, c), r, c);
}

void check_shape(const MatrixRM &w, const std::vector<uint8_t> &bits, int64_t group, const std::string &name) {
    const int64_t rows = w.rows(), cols = w.cols();
    if (static_cast<int64_t>(bits.size()) != rows)
        fail(PANGU_ERR_INVALID_ARGUMENT,
             name + ": " + std::to_string(bits.size()) + " row widths for " + std::to_string(rows) + " rows");
    for (int64_t r = 0; r < rows; ++r)
        if (!lowbit_width_ok(bits[r]))
            fail(PANGU_ERR_INVALID_ARGUMENT, name + ": row " + std::to_string(r) + " has width " +
                                                 std::to_string(bits[r]) + "; the widths are 2, 3, 4, 6 and 8 bits");
    if (group <= 0 || group % 32 != 0)
        fail(PANGU_ERR_INVALID_ARGUMENT,
             name + ": group size " + std::to_string(group) + " is not a positive multiple of 32");
    if (cols <= 0 || cols % 64 != 0 || cols % group != 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, name + ": " + std::to_string(cols) +
                                             " columns is not a positive multiple of 64 and of the group size " +
                                             std::to_string(group));
}

int thread_count(int requested) {
    return requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs fn(i) for i in [0, n) on up to `threads` threads, the caller one of them, tasks claimed in order (so put
// the largest first); the first exception is rethrown here.
template <class F>
void parallel_for(int64_t n, int threads, const F &fn) {
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::mutex mu;
    auto worker = [&] {
        for (int64_t i; (i = next.fetch_add(1)) < n;) {
            try {
                fn(i);
            } catch (...) {
                std::lock_guard<std::mutex> lk(mu);
                if (!error) error = std::current_exception();
                next = n;
            }
        }
    };
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < std::min<int64_t>(threads, n); ++t) pool.emplace_back(worker);
    worker();
    for (auto &t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

// ---- grids ----

constexpr float kF16MinNormal = 6.103515625e-05f;  // 2^-14

// The smallest F16 value >= s > 0, as a float (Inf above 65504). Rounding up rather than to nearest keeps the
// grid spanning the group's range, so that RTN never clamps.
float f16_ceil(float s) {
    uint16_t h = f32_to_f16(s);
    if (f16_to_f32(h) < s) ++h;  // the next F16 up (0x7bff + 1 is Inf)
    return f16_to_f32(h);
}

bool f16_ok(float s) {
    if (s == 0.0f) return true;
    const float r = f16_ceil(s);
    return std::isfinite(r) && r >= kF16MinNormal;
}

bool symmetric_row(int bits, bool symmetric) { return symmetric || bits == 8; }

// The exact scale of a group whose values span [mn, mx]; in double so that a range near FLT_MAX stays finite.
float raw_scale(float mn, float mx, int bits, bool symmetric) {
    if (symmetric_row(bits, symmetric))
        return static_cast<float>(std::max(-double(mn), double(mx)) / ((1 << (bits - 1)) - 1));
    const double lo = std::min(double(mn), 0.0), hi = std::max(double(mx), 0.0);
    return static_cast<float>((hi - lo) / ((1 << bits) - 1));
}

struct Grid {
    float s = 0;
    uint8_t z = 0;
};

Grid make_grid(float mn, float mx, int bits, bool symmetric, bool f16) {
    Grid g;
    g.z = static_cast<uint8_t>(1 << (bits - 1));  // symmetric, and the zero of a group of zeros
    const float s = raw_scale(mn, mx, bits, symmetric);
    if (s == 0.0f) return g;
    g.s = f16 ? f16_ceil(s) : s;
    if (!symmetric_row(bits, symmetric)) {
        // z from the scale actually used, so that min is within s/2 of the grid's lowest point
        const float z = std::nearbyint(-std::min(mn, 0.0f) / g.s);
        g.z = static_cast<uint8_t>(std::min(std::max(z, 0.0f), float((1 << bits) - 1)));
    }
    return g;
}

// Round half to even (the default rounding mode), then clamp; NaN (only from a degenerate GPTQ) becomes 0.
inline uint8_t level_of(float w, const Grid &g, int bits) {
    if (g.s == 0.0f) return g.z;
    const float u = std::nearbyint(w / g.s) + g.z, top = float((1 << bits) - 1);
    return static_cast<uint8_t>(u > top ? top : (u >= 0.0f ? u : 0.0f));
}

// The same formula as LowbitMatrix::weight, so GPTQ feeds back exactly the error of the stored weight.
inline float dequant(uint8_t u, const Grid &g) { return (float(u) - float(g.z)) * g.s; }

// Whether every group of w (columns as they will be stored) gets an F16-representable scale.
bool scales_fit_f16(const MatrixRM &w, const std::vector<uint8_t> &bits, const LowbitOptions &o) {
    for (int64_t r = 0; r < w.rows(); ++r)
        for (int64_t c = 0; c < w.cols(); c += o.group) {
            const auto seg = w.row(r).segment(c, o.group);
            if (!f16_ok(raw_scale(seg.minCoeff(), seg.maxCoeff(), bits[r], o.symmetric))) return false;
        }
    return true;
}

LowbitMatrix empty_matrix(const MatrixRM &w, const std::vector<uint8_t> &bits, int64_t group) {
    LowbitMatrix m;
    m.rows = w.rows();
    m.cols = w.cols();
    m.group = group;
    m.bits = bits;
    m.level.assign(static_cast<size_t>(m.rows * m.cols), 0);
    m.scale.assign(static_cast<size_t>(m.rows * m.cols / group), 0.0f);
    m.zero.assign(m.scale.size(), 0);
    return m;
}

}  // namespace

float LowbitMatrix::weight(int64_t r, int64_t c) const {
    const size_t g = static_cast<size_t>(r * (cols / group) + c / group);
    return (float(level[static_cast<size_t>(r * cols + c)]) - float(zero[g])) * scale[g];
}

MatrixRM LowbitMatrix::dequantize() const {
    MatrixRM w(rows, cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) w(r, perm.empty() ? c : perm[c]) = weight(r, c);
    return w;
}

// ---- RTN ----

LowbitMatrix rtn_quantize(const MatrixRM &w, const std::vector<uint8_t> &bits, const LowbitOptions &o,
                          const std::string &name) {
    check_shape(w, bits, o.group, name);
    check_finite(w, name);
    LowbitMatrix m = empty_matrix(w, bits, o.group);
    m.f32_scales = !scales_fit_f16(w, bits, o);
    const int64_t ng = m.cols / o.group;
    for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t g = 0; g < ng; ++g) {
            const auto seg = w.row(r).segment(g * o.group, o.group);
            const Grid grid = make_grid(seg.minCoeff(), seg.maxCoeff(), bits[r], o.symmetric, !m.f32_scales);
            m.scale[r * ng + g] = grid.s;
            m.zero[r * ng + g] = grid.z;
            for (int64_t c = g * o.group; c < (g + 1) * o.group; ++c)
                m.level[r * m.cols + c] = level_of(w(r, c), grid, bits[r]);
        }
    return m;
}

// ---- the inverse Hessian's factor ----

namespace {

constexpr int64_t kSolveBlock = 128;

// The inverse of the lower-triangular factor held in L's lower triangle. Column block k of L^-1 is zero above
// its diagonal block, so it solves only the trailing system L[j0:, j0:] X = I[j0:, block]: n^3 / 3 flops instead
// of the n^3 of solving against the whole identity. Blocks are independent and run in parallel.
Eigen::MatrixXd lower_inverse(const Eigen::MatrixXd &L, int threads) {
    const int64_t n = L.rows();
    Eigen::MatrixXd X = Eigen::MatrixXd::Zero(n, n);
    parallel_for((n + kSolveBlock - 1) / kSolveBlock, threads, [&](int64_t k) {
        const int64_t j0 = k * kSolveBlock, w = std::min(kSolveBlock, n - j0);
        auto Xk = X.block(j0, j0, n - j0, w);
        Xk.topRows(w).setIdentity();
        L.block(j0, j0, n - j0, n - j0).triangularView<Eigen::Lower>().solveInPlace(Xk);
    });
    return X;
}

void check_hessian(const Eigen::MatrixXd &H, int64_t cols, const std::string &name) {
    if (H.rows() != cols || H.cols() != cols)
        fail(PANGU_ERR_INVALID_ARGUMENT, name + ": the Hessian is [" + std::to_string(H.rows()) + ", " +
                                             std::to_string(H.cols()) + "], not [" + std::to_string(cols) + ", " +
                                             std::to_string(cols) + "]");
    check_finite(H, name + " (Hessian)");
}

}  // namespace

Eigen::MatrixXd gptq_hinv_factor(const Eigen::MatrixXd &H, const std::vector<int32_t> &perm, double damp,
                                 const std::string &name, int threads) {
    const int64_t n = H.rows();
    check_hessian(H, H.cols(), name);
    if (!(damp >= 0) || !std::isfinite(damp))
        fail(PANGU_ERR_INVALID_ARGUMENT, name + ": damping " + std::to_string(damp) + " is not a finite value >= 0");
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    if (!perm.empty()) {
        if (!std::is_permutation(perm.begin(), perm.end(), order.begin(), order.end()))
            fail(PANGU_ERR_INVALID_ARGUMENT, name + ": the column order is not a permutation of the columns");
        order = perm;
    }
    Eigen::VectorXd diag = H.diagonal();
    for (double &d : diag.array()) d = d == 0 ? 1 : d;  // dead inputs: no signal, any positive value will do
    const double lambda = n > 0 ? damp * diag.mean() : 0;
    // M = J P^T H' P J: the columns in stored order, then reversed.
    Eigen::MatrixXd M(n, n);
    for (int64_t b = 0; b < n; ++b)
        for (int64_t a = 0; a < n; ++a) M(a, b) = H(order[n - 1 - a], order[n - 1 - b]);
    for (int64_t a = 0; a < n; ++a) M(a, a) = diag[order[n - 1 - a]] + lambda;
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(M);  // in place: M's lower triangle becomes R
    if (llt.info() != Eigen::Success)
        fail(PANGU_ERR_NUMERIC, name +
                                    ": the damped Hessian of its inputs is not positive definite (Cholesky "
                                    "failed); calibrate with more text, or raise the damping");
    Eigen::MatrixXd U = lower_inverse(M, thread_count(threads));
    U.reverseInPlace();  // J R^-1 J: upper triangular, in stored order
    return U;
}

// ---- GPTQ ----

namespace {

// GPTQ over rows [r0, r0 + nr) of W (columns in stored order, updated in place), U the factor in F32.
struct GptqRows {
    MatrixRM &W;
    const MatrixRM &U;
    const LowbitOptions &o;
    bool f16;
    LowbitMatrix &m;
    std::atomic<bool> &need_f32;
    int64_t r0, nr;

    Eigen::MatrixXf Wb, Err;  // the block's columns as they are being updated, and their scaled errors
    std::vector<Grid> grid;   // each row's grid for the current group
    Eigen::VectorXf err;

    void run() {
        const int64_t cols = W.cols();
        Err.resize(nr, std::min(o.block, cols));
        grid.resize(static_cast<size_t>(nr));
        err.resize(nr);
        for (int64_t i1 = 0; i1 < cols && !need_f32; i1 += o.block) {
            const int64_t nb = std::min(o.block, cols - i1), i2 = i1 + nb;
            Wb = W.block(r0, i1, nr, nb);
            for (int64_t j = 0; j < nb; ++j) {
                if ((i1 + j) % o.group == 0 && !start_group(i1, j, nb)) return;
                quantize_column(i1, j, nb);
            }
            // the lazy batch update: the whole block's feedback to the columns after it in one product
            if (i2 < cols)
                W.block(r0, i2, nr, cols - i2).noalias() -= Err.leftCols(nb) * U.block(i1, i2, nb, cols - i2);
        }
    }

    // Grids of the group starting at column i1 + j, from the rows' current weights. Its columns after the block
    // have not yet had this block's feedback: they get it here, as the lazy update would give it. False (and
    // need_f32 set) if a scale must be F32 while F16 ones are being used.
    bool start_group(int64_t i1, int64_t j, int64_t nb) {
        const int64_t c = i1 + j, i2 = i1 + nb, in_block = std::min(o.group, nb - j);
        Eigen::VectorXf mn = Wb.middleCols(j, in_block).rowwise().minCoeff();
        Eigen::VectorXf mx = Wb.middleCols(j, in_block).rowwise().maxCoeff();
        if (c + o.group > i2) {
            Eigen::MatrixXf tail = W.block(r0, i2, nr, c + o.group - i2);
            if (j > 0) tail.noalias() -= Err.leftCols(j) * U.block(i1, i2, j, c + o.group - i2);
            mn = mn.cwiseMin(tail.rowwise().minCoeff());
            mx = mx.cwiseMax(tail.rowwise().maxCoeff());
        }
        const int64_t ng = m.cols / o.group, g = c / o.group;
        for (int64_t r = 0; r < nr; ++r) {
            const int bits = m.bits[r0 + r];
            if (f16 && !f16_ok(raw_scale(mn[r], mx[r], bits, o.symmetric))) {
                need_f32 = true;
                return false;
            }
            grid[r] = make_grid(mn[r], mx[r], bits, o.symmetric, f16);
            m.scale[(r0 + r) * ng + g] = grid[r].s;
            m.zero[(r0 + r) * ng + g] = grid[r].z;
        }
        return true;
    }

    // Quantizes column i1 + j of every row and feeds its error to the block's later columns.
    void quantize_column(int64_t i1, int64_t j, int64_t nb) {
        const int64_t c = i1 + j;
        const float d = U(c, c);
        for (int64_t r = 0; r < nr; ++r) {
            const uint8_t u = level_of(Wb(r, j), grid[r], m.bits[r0 + r]);
            m.level[(r0 + r) * m.cols + c] = u;
            err[r] = (Wb(r, j) - dequant(u, grid[r])) / d;
        }
        Err.col(j) = err;
        if (j + 1 < nb) Wb.rightCols(nb - j - 1).noalias() -= err * U.block(c, c + 1, 1, nb - j - 1);
    }
};

// One pass of GPTQ over every row. False if F16 scales were asked for and some group needed F32 ones.
bool gptq_pass(const MatrixRM &w_stored, const MatrixRM &U, const LowbitOptions &o, bool f16, int threads,
               LowbitMatrix &m) {
    MatrixRM W = w_stored;
    std::atomic<bool> need_f32{false};
    const int64_t chunks = std::min<int64_t>(threads, m.rows), per = (m.rows + chunks - 1) / chunks;
    parallel_for(chunks, threads, [&](int64_t k) {
        const int64_t r0 = k * per, nr = std::min(per, m.rows - r0);
        if (nr > 0) GptqRows{W, U, o, f16, m, need_f32, r0, nr, {}, {}, {}, {}}.run();
    });
    return !need_f32;
}

}  // namespace

LowbitMatrix gptq_quantize(const MatrixRM &w, const Eigen::MatrixXd &H, const std::vector<uint8_t> &bits,
                           const LowbitOptions &o, const std::string &name) {
    check_shape(w, bits, o.group, name);
    check_finite(w, name);
    check_hessian(H, w.cols(), name);
    if (o.block <= 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, name + ": GPTQ block of " + std::to_string(o.block) + " columns");
    const int64_t cols = w.cols();
    const int threads = thread_count(o.threads);
    LowbitMatrix m = empty_matrix(w, bits, o.group);
    std::vector<int32_t> order(static_cast<size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    if (o.act_order) {
        auto d = [&](int32_t i) { return H(i, i) == 0 ? 1.0 : H(i, i); };  // dead inputs as the factor sees them
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return d(a) > d(b); });
        m.perm = order;
    }
    const MatrixRM U = gptq_hinv_factor(H, m.perm, o.damp, name, threads).cast<float>();
    MatrixRM ws(w.rows(), cols);  // stored column order; dead inputs' weights are 0, as nothing can correct them
    for (int64_t c = 0; c < cols; ++c)
        ws.col(c) = H(order[c], order[c]) == 0 ? Eigen::VectorXf::Zero(w.rows()) : Eigen::VectorXf(w.col(order[c]));
    // F16 unless the original groups already need F32; a group GPTQ's updates push out of F16 restarts with F32.
    m.f32_scales = !scales_fit_f16(ws, bits, o);
    if (!gptq_pass(ws, U, o, !m.f32_scales, threads, m)) {
        m.f32_scales = true;
        gptq_pass(ws, U, o, false, threads, m);
    }
    return m;
}

// ---- calibration statistics ----

namespace {

// Copies the lower triangle of a square matrix onto the upper, tile by tile so that the reads along rows stay in
// cache (element by element, a 6144-wide H took longer than the product itself).
void mirror_lower(Eigen::MatrixXd &H) {
    constexpr int64_t kTile = 64;
    const int64_t n = H.cols();
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
        const int64_t bj = std::min(kTile, n - j0);
        for (int64_t i0 = 0; i0 < j0; i0 += kTile) H.block(i0, j0, kTile, bj) = H.block(j0, i0, bj, kTile).transpose();
        for (int64_t j = j0 + 1; j < j0 + bj; ++j)  // the diagonal tile
            for (int64_t i = j0; i < j; ++i) H(i, j) = H(j, i);
    }
}

}  // namespace

InputStats::InputStats(int64_t cols, int threads_)
    : threads(threads_),
      H(Eigen::MatrixXd::Zero(cols, cols)),
      sum_abs(Eigen::VectorXd::Zero(cols)),
      sum(Eigen::VectorXd::Zero(cols)),
      sum_sq(Eigen::VectorXd::Zero(cols)) {}

void InputStats::add(const MatrixRM &x) {
    const int64_t cols = H.cols();
    if (x.cols() != cols)
        fail(PANGU_ERR_INVALID_ARGUMENT, "calibration activations of " + std::to_string(x.cols()) + " channels where " +
                                             std::to_string(cols) + " were expected");
    if (!x.allFinite()) fail(PANGU_ERR_NUMERIC, "NaN or Inf in the calibration activations");
    if (x.rows() == 0) return;
    const double n_new = static_cast<double>(n + x.rows()), keep = double(n) / n_new, add = 2.0 / n_new;
    // The lower triangle of X^T X by column blocks, independent products run in parallel (Eigen's own are
    // single-threaded here). Each block's product is formed in F32, twice as fast as double, over one chunk of a
    // few thousand tokens; the running average is kept in double.
    constexpr int64_t kBlock = 256;
    parallel_for((cols + kBlock - 1) / kBlock, thread_count(threads), [&](int64_t k) {
        const int64_t j0 = k * kBlock, w = std::min(kBlock, cols - j0);
        const Eigen::MatrixXf g = x.rightCols(cols - j0).transpose() * x.middleCols(j0, w);
        auto h = H.block(j0, j0, cols - j0, w);
        h = keep * h + add * g.cast<double>();
    });
    mirror_lower(H);
    const Eigen::MatrixXd xd = x.cast<double>();
    sum_abs += xd.cwiseAbs().colwise().sum().transpose();
    sum += xd.colwise().sum().transpose();
    sum_sq += xd.array().square().matrix().colwise().sum().transpose();
    n += x.rows();
}

Eigen::VectorXd InputStats::mean_abs() const {
    return n > 0 ? Eigen::VectorXd(sum_abs / double(n)) : Eigen::VectorXd::Zero(sum_abs.size());
}

Eigen::VectorXd InputStats::variance() const {
    if (n == 0) return Eigen::VectorXd::Zero(sum.size());
    const Eigen::ArrayXd mean = sum.array() / double(n);
    return (sum_sq.array() / double(n) - mean.square()).max(0.0).matrix();
}

// ---- importance ----

namespace {

// Min-max to [0, 1] within the layer; a constant part carries no ranking and is all 0.
Eigen::VectorXd normalise(const Eigen::VectorXd &v) {
    if (v.size() == 0) return v;
    const double lo = v.minCoeff(), hi = v.maxCoeff();
    if (!(hi > lo)) return Eigen::VectorXd::Zero(v.size());
    return ((v.array() - lo) / (hi - lo)).matrix();
}

// num / den elementwise, 0 where den is 0 (a row of zeros).
Eigen::VectorXd ratio(const Eigen::VectorXd &num, const Eigen::VectorXd &den) {
    return (den.array() > 0).select(num.array() / den.array(), 0.0).matrix();
}

}  // namespace

ImportanceParts channel_importance(const MatrixRM &w, const InputStats &st, double damp, int threads) {
    if (w.cols() != st.H.cols())
        fail(PANGU_ERR_INVALID_ARGUMENT, "channel_importance: weights of " + std::to_string(w.cols()) +
                                             " columns, statistics of " + std::to_string(st.H.cols()) + " inputs");
    if (st.n == 0) fail(PANGU_ERR_INVALID_ARGUMENT, "channel_importance: no calibration tokens were seen");
    check_finite(w, "channel_importance: weights");
    const Eigen::MatrixXd A = w.cast<double>().cwiseAbs();
    const Eigen::VectorXd row_sum = A.rowwise().sum();
    // diag(H^-1) = the squared column norms of U, since H^-1 = U^T U
    const Eigen::VectorXd hinv =
        gptq_hinv_factor(st.H, {}, damp, "channel_importance", threads).colwise().squaredNorm().transpose();
    ImportanceParts p;
    p.output = A * st.mean_abs();
    p.act = ratio(p.output, row_sum);
    p.variance = ratio(A * st.variance(), row_sum);
    p.magnitude = row_sum / double(w.cols());
    p.hessian = (A.array().square().rowwise() / hinv.array().square().transpose()).rowwise().mean().matrix();
    p.act = normalise(p.act);
    p.hessian = normalise(p.hessian);
    p.magnitude = normalise(p.magnitude);
    p.output = normalise(p.output);
    p.variance = normalise(p.variance);
    p.score = 0.25 * p.act + 0.25 * p.hessian + 0.15 * p.magnitude + 0.25 * p.output + 0.10 * p.variance;
    return p;
}

// ---- bit allocation ----

namespace {

void check_scores(const Eigen::VectorXd &score) {
    if (!score.allFinite()) fail(PANGU_ERR_INVALID_ARGUMENT, "bit allocation: an importance score is NaN or Inf");
}

// score * (4^-b - 4^-b') / (b' - b) for the step from width index k to k + 1: a width's squared error scales as
// 4^-b, so this is the importance-weighted error the step removes per bit it costs.
double step_gain(double score, int k) {
    const int b = kLowBitWidths[k], b1 = kLowBitWidths[k + 1];
    return score * (std::ldexp(1.0, -2 * b) - std::ldexp(1.0, -2 * b1)) / (b1 - b);
}

}  // namespace

std::vector<uint8_t> allocate_quantile(const Eigen::VectorXd &score) {
    check_scores(score);
    const int64_t n = score.size();
    std::vector<int32_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return score[a] < score[b]; });
    std::vector<uint8_t> bits(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) bits[idx[i]] = static_cast<uint8_t>(kLowBitWidths[i * 5 / n]);
    return bits;
}

std::vector<uint8_t> allocate_budget(const Eigen::VectorXd &score, double avg_bits) {
    check_scores(score);
    if (!(avg_bits >= 2.0 && avg_bits <= 8.0))
        fail(PANGU_ERR_INVALID_ARGUMENT,
             "bit allocation: an average of " + std::to_string(avg_bits) + " bits is outside [2, 8]");
    const int64_t n = score.size();
    const int64_t budget = std::llround(avg_bits * double(n));
    int64_t used = 2 * n;
    std::vector<int> k(static_cast<size_t>(n), 0);  // each row's index in kLowBitWidths
    struct Step {
        double gain;
        int32_t row;
        bool operator<(const Step &o) const { return gain < o.gain || (gain == o.gain && row > o.row); }
    };
    std::priority_queue<Step> queue;
    for (int32_t r = 0; r < n; ++r) queue.push({step_gain(score[r], 0), r});
    while (!queue.empty()) {
        const int32_t r = queue.top().row;
        queue.pop();
        const int cost = kLowBitWidths[k[r] + 1] - kLowBitWidths[k[r]];
        if (used + cost > budget) continue;  // never fits later either: what is left only shrinks
        used += cost;
        if (++k[r] + 1 < static_cast<int>(std::size(kLowBitWidths))) queue.push({step_gain(score[r], k[r]), r});
    }
    std::vector<uint8_t> bits(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) bits[r] = static_cast<uint8_t>(kLowBitWidths[k[r]]);
    return bits;
}

// ---- PGD_QB packing ----

namespace {

// One plane of a 64-column run (device.h): bits [shift, shift + w) of each level.
void plane4(const uint8_t *u, int shift, uint8_t *o) {  // byte j: column j low, column j + 32 high
    for (int j = 0; j < 32; ++j)
        o[j] = static_cast<uint8_t>(((u[j] >> shift) & 15) | (((u[j + 32] >> shift) & 15) << 4));
}
void plane2(const uint8_t *u, int shift, uint8_t *o) {  // byte j: column j + 16 i in bits 2i, 2i + 1
    for (int j = 0; j < 16; ++j) {
        int b = 0;
        for (int i = 0; i < 4; ++i) b |= ((u[j + 16 * i] >> shift) & 3) << (2 * i);
        o[j] = static_cast<uint8_t>(b);
    }
}
void plane1(const uint8_t *u, int shift, uint8_t *o) {  // bit i of byte j: column 8 j + i
    for (int j = 0; j < 8; ++j) {
        int b = 0;
        for (int i = 0; i < 8; ++i) b |= ((u[8 * j + i] >> shift) & 1) << i;
        o[j] = static_cast<uint8_t>(b);
    }
}

}  // namespace

void qb_pack_row(const uint8_t *level, int64_t cols, int bits, uint8_t *out) {
    if (!lowbit_width_ok(bits)) fail(PANGU_ERR_INVALID_ARGUMENT, "qb_pack_row: width " + std::to_string(bits));
    if (cols % 64 != 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, "qb_pack_row: " + std::to_string(cols) + " columns is not a multiple of 64");
    for (int64_t c = 0; c < cols; ++c)
        if (level[c] >> bits)
            fail(PANGU_ERR_INVALID_ARGUMENT, "qb_pack_row: level " + std::to_string(level[c]) + " at column " +
                                                 std::to_string(c) + " does not fit " + std::to_string(bits) + " bits");
    for (int64_t run = 0; run < cols / 64; ++run) {
        const uint8_t *u = level + run * 64;
        uint8_t *o = out + run * 8 * bits;
        switch (bits) {
            case 8: std::memcpy(o, u, 64); break;
            case 4: plane4(u, 0, o); break;
            case 2: plane2(u, 0, o); break;
            case 3: {  // [2][1]: bit 2 in the 1-bit plane
                plane2(u, 0, o);
                plane1(u, 2, o + 16);
                break;
            }
            case 6: {  // [4][2]: bits 4-5 in the 2-bit plane
                plane4(u, 0, o);
                plane2(u, 4, o + 32);
                break;
            }
        }
    }
}

std::vector<int32_t> qb_row_order(const std::vector<uint8_t> &bits) {
    for (size_t r = 0; r < bits.size(); ++r)
        if (!lowbit_width_ok(bits[r]))
            fail(PANGU_ERR_INVALID_ARGUMENT,
                 "qb_row_order: row " + std::to_string(r) + " has width " + std::to_string(bits[r]));
    std::vector<int32_t> order(bits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bits[a] < bits[b]; });
    return order;
}

}  // namespace pangu
