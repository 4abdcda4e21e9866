// Compiled as C++11 with -Wall -Wextra -pedantic -Werror: the header must be usable from C++ as well.
#include "pangu/pangu.h"

static_assert(PANGU_OK == 0, "PANGU_OK is zero");
int pangu_header_cxx_check() {
    pangu_model_params p{};
    return static_cast<int>(sizeof p) > 0 && PANGU_VERSION_NUMBER > 0;
}
