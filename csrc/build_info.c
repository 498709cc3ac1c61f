/* The build fingerprint baked in by _build_cffi.py: version + hash of csrc/ + options. */
#include "fc_internal.h"

#ifndef FC_BUILD_INFO
#define FC_BUILD_INFO "fastconv unknown"
#endif

const char *fc_build_info(void) { return FC_BUILD_INFO; }

int fc_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
