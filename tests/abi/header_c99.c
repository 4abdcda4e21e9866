/* Compiled as strict C99 with -Wall -Wextra -pedantic -Werror: the header must stay clean C. */
#include "pangu/pangu.h"

int pangu_header_c99_check(void);
int pangu_header_c99_check(void) {
    pangu_session_params p;
    (void)p;
    return PANGU_VERSION_NUMBER > 0 && (int)PANGU_OK == 0;
}
