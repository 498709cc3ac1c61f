/* Level 1 of a kernel file whose hot loops are one code for every vector ISA (im2col.c,
 * maxpool.c, depthwise.c): included with FC_PER_ISA_FILE naming the file, it includes that file
 * once per ISA with FC_ISA_SFX(name) = FC_SFX(name##_<isa>), FC_TARGET and FC_VBYTES (the ISA's
 * vector register in bytes, for files that spell their vectors out) set, so its level 2 is
 * compiled for generic x86-64, x86-64-v3 (avx2) and x86-64-v4 (avx512).  (direct.c and winograd.c
 * size their register tiles per ISA and spell their levels out.)  Not include-guarded: once per
 * dtype.
 *
 * FC_ISA_PICK(isa, fn) is then the function of that name for the ISA a call runs: the shape's
 * isa, lowered to what this CPU executes. */
#define FC_ISA_SFX(name) FC_SFX(name##_generic)
#define FC_TARGET
#define FC_VBYTES 16
#include FC_PER_ISA_FILE
#undef FC_ISA_SFX
#undef FC_TARGET
#undef FC_VBYTES
#if FC_X86
#define FC_ISA_SFX(name) FC_SFX(name##_avx2)
#define FC_TARGET FC_TARGET_AVX2
#define FC_VBYTES 32
#include FC_PER_ISA_FILE
#undef FC_ISA_SFX
#undef FC_TARGET
#undef FC_VBYTES
#define FC_ISA_SFX(name) FC_SFX(name##_avx512)
#define FC_TARGET FC_TARGET_AVX512
#define FC_VBYTES 64
#include FC_PER_ISA_FILE
#undef FC_ISA_SFX
#undef FC_TARGET
#undef FC_VBYTES
#endif

#ifndef FC_ISA_PICK
#if FC_X86
#define FC_ISA_PICK(isa, fn)                                                                  \
    (fc_isa(isa) == FC_ISA_AVX512 ? FC_SFX(fn##_avx512)                                       \
                                  : fc_isa(isa) == FC_ISA_AVX2 ? FC_SFX(fn##_avx2) : FC_SFX(fn##_generic))
#else
#define FC_ISA_PICK(isa, fn) FC_SFX(fn##_generic)
#endif
#endif
