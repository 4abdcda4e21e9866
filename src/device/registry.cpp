// The table of backends built into this library. Each backend folder's backend.cmake adds its id to
// PANGU_BACKENDS; CMake writes backends.inc with one PGD_BACKEND(id) line per id, in that order (cpu first).
#include <cstdio>
#include <cstring>
#include <string>

#include "device/device.h"
#include "pangu/pangu.h"

extern "C" {
#define PGD_BACKEND(id) const pgd_backend_reg *pgd_backend_##id(void);
#include "backends.inc"
#undef PGD_BACKEND
}

namespace {

using RegFn = const pgd_backend_reg *(*)(void);
const RegFn kBackends[] = {
#define PGD_BACKEND(id) pgd_backend_##id,
#include "backends.inc"
#undef PGD_BACKEND
};
constexpr int kCount = static_cast<int>(sizeof kBackends / sizeof kBackends[0]);

}  // namespace

extern "C" {

int pgd_backend_count(void) { return kCount; }

const pgd_backend_reg *pgd_backend_get(int i) { return i >= 0 && i < kCount ? kBackends[i]() : nullptr; }

const pgd_backend_reg *pgd_backend_find(const char *name) {
    for (int i = 0; name && i < kCount; ++i)
        if (std::strcmp(kBackends[i]()->name, name) == 0) return kBackends[i]();
    return nullptr;
}

pgd_device *pgd_device_create(const char *name, const pgd_device_options *opt, int *status, char *err,
                              size_t err_size) {
    int ignored = 0;
    if (!status) status = &ignored;
    *status = 0;
    if (err && err_size) err[0] = '\0';
    const pgd_backend_reg *reg = pgd_backend_find(name);
    if (!reg) {
        std::string names;
        for (int i = 0; i < kCount; ++i) names += (i ? ", " : "") + std::string(kBackends[i]()->name);
        if (err && err_size)
            std::snprintf(err, err_size, "unknown device backend \"%s\" (available: %s)", name ? name : "(null)",
                          names.c_str());
        *status = PANGU_ERR_UNSUPPORTED;
        return nullptr;
    }
    if (reg->api_version != PGD_API_VERSION) {
        if (err && err_size)
            std::snprintf(err, err_size, "device backend \"%s\" was written for device interface %u, not %d", name,
                          reg->api_version, PGD_API_VERSION);
        *status = PANGU_ERR_UNSUPPORTED;
        return nullptr;
    }
    pgd_device *d = reg->create(opt, status, err, err_size);
    if (!d && *status == 0) *status = PANGU_ERR_OUT_OF_MEMORY;
    return d;
}

}  // extern "C"
