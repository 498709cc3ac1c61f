/* The build fingerprint baked in by _build_cffi.py (version + hash of csrc/ + options), and the CPU's ISA. */
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

/* The best FC_ISA_* this CPU (and its OS: libgcc checks XCR0) executes, from cpuid. */
int fc_cpu_isa(void) {
#if FC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return FC_ISA_AVX512;
    if (__builtin_cpu_supports("x86-64-v3")) return FC_ISA_AVX2;
#endif
    return FC_ISA_GENERIC;
}
