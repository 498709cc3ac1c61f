/* fastconv's C ABI.  This file is read verbatim by cffi as the cdef (fastconv/_build_cffi.py) and
 * included by every .c, so it holds plain declarations only: no #include, no #if, no macros.
 *
 * Symbols follow one grammar: fc_<op>_<pass>_<algo>[_<variant>]_<dtype>.
 * Every kernel takes C-contiguous arrays that the Python wrapper allocated and checked, a shape
 * struct, and the thread count; it returns FC_OK or an FC_E* status and keeps no global state.
 * Every size in a shape struct is at least 1 (the Python api answers an empty batch, N = 0, without
 * calling a kernel: the plans divide by the number of planes) and at most 2^62 (fastconv/spec.py).
 */

/* The vector ISA of a kernel's hot loops: portable C vectors, AVX2 + FMA (x86-64-v3), AVX-512
 * (x86-64-v4).  A shape struct names the one to run; the kernel lowers it to fc_cpu_isa(), the
 * best this CPU executes (cpuid). */
enum { FC_ISA_GENERIC = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2 };
int fc_cpu_isa(void);

typedef struct {
    int64_t n, c_in, h, w;        /* input  (N, C_in, H, W)                     */
    int64_t c_out, kh, kw;        /* weight (C_out, C_in / groups, kH, kW)      */
    int64_t out_h, out_w;         /* output (N, C_out, out_h, out_w)            */
    int64_t stride_h, stride_w;
    int64_t pad_top, pad_left;    /* bottom/right padding is implied by out_h/out_w */
    int64_t dilation_h, dilation_w;
    int64_t groups;
    int64_t isa;                  /* FC_ISA_*: the microkernels to run          */
    int64_t act;                  /* FC_ACT_*: the forward's activation (backward: FC_ACT_NONE) */
    double act_slope;             /* FC_ACT_LEAKY_RELU's negative slope         */
} fc_conv2d_shape;

/* The activation a forward kernel applies to each output as it finishes it (while it is in cache),
 * as torch's relu, relu6 (hardtanh(0, 6)) and leaky_relu: NaN stays NaN. */
enum { FC_ACT_NONE = 0, FC_ACT_RELU = 1, FC_ACT_RELU6 = 2, FC_ACT_LEAKY_RELU = 3 };

typedef struct {
    int64_t n, c, h, w;           /* input (N, C, H, W); planes = n * c         */
    int64_t kh, kw;
    int64_t out_h, out_w;
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
    int64_t dilation_h, dilation_w;
    int64_t isa;                  /* FC_ISA_*: the loops to run (forward)       */
} fc_pool2d_shape;

/* Element strides of a weight read as w[g][o][c][i][j] (o and c within group g).  Lets a kernel
 * read a flipped, transposed view in place (the backward passes, fastconv/common/transpose.py); NULL
 * where a function takes one means a C-contiguous OIHW array. */
typedef struct {
    int64_t g, o, c, i, j;
} fc_weight_strides;

enum { FC_OK = 0, FC_ENOMEM = 1, FC_EINDEX = 2, FC_ESIZE = 3, FC_ENONFINITE = 4 };

/* Where a forward call's time goes: the forward kernels take `double *profile`, NULL when not
 * measured, else FC_PHASES slots to which each phase's thread-seconds are added. */
enum {
    FC_PHASE_INPUT = 0,  /* packing, unfolding or transforming the input        */
    FC_PHASE_WEIGHT = 1, /* packing or transforming the weights                 */
    FC_PHASE_GEMM = 2,   /* the multiply-adds: the microkernel or OpenBLAS GEMM */
    FC_PHASE_OUTPUT = 3, /* the epilogue: bias, output transform                */
    FC_PHASES = 4
};

const char *fc_build_info(void);
int fc_has_openmp(void);
/* Workspace blocks kept between calls (csrc/workspace.c): their bytes, and handing them back. */
int64_t fc_workspace_kept(void);
void fc_workspace_release(void);

/* y = conv2d(x, w) + bias; bias may be NULL; w is read through ws (NULL: contiguous). */
int fc_conv2d_fwd_direct_f32(const float *x, const float *w, const fc_weight_strides *ws,
                             const float *bias, float *y, const fc_conv2d_shape *s, int n_threads,
                             double *profile);
int fc_conv2d_fwd_direct_f64(const double *x, const double *w, const fc_weight_strides *ws,
                             const double *bias, double *y, const fc_conv2d_shape *s, int n_threads,
                             double *profile);

/* y = conv2d(x, w) + bias by the direct algorithm along the flat rows of a stride-phase copy
 * (direct_flat.c), any problem; bias may be NULL; w is read through ws (NULL: contiguous). */
int fc_conv2d_fwd_direct_flat_f32(const float *x, const float *w, const fc_weight_strides *ws,
                                  const float *bias, float *y, const fc_conv2d_shape *s, int n_threads);
int fc_conv2d_fwd_direct_flat_f64(const double *x, const double *w, const fc_weight_strides *ws,
                                  const double *bias, double *y, const fc_conv2d_shape *s, int n_threads);

/* y = conv2d(x, w) + bias by im2col + GEMM (OpenBLAS); the column buffers of all threads stay
 * within workspace_bytes (at least one output row each).  FC_ESIZE if a GEMM dimension exceeds
 * OpenBLAS's 32-bit integers. */
int fc_conv2d_fwd_im2col_f32(const float *x, const float *w, const float *bias, float *y,
                             const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                             double *profile);
int fc_conv2d_fwd_im2col_f64(const double *x, const double *w, const double *bias, double *y,
                             const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                             double *profile);

/* grad_w of conv2d by im2col + GEMM; grad_x by GEMM + col2im.  Same workspace rule. */
int fc_conv2d_bwd_weight_im2col_f32(const float *gy, const float *x, float *gw,
                                    const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);
int fc_conv2d_bwd_weight_im2col_f64(const double *gy, const double *x, double *gw,
                                    const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);
int fc_conv2d_bwd_data_im2col_f32(const float *gy, const float *w, float *gx,
                                  const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);
int fc_conv2d_bwd_data_im2col_f64(const double *gy, const double *w, double *gx,
                                  const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);

/* Winograd F(m x m, 3 x 3) conv2d, m = 2 (winograd_f2k3) or 4 (winograd_f4k3): 3x3 filters,
 * stride 1, dilation 1, any padding (negative too).  transform_filter writes u, the transformed
 * filter packed for the kernel: groups * (m+2)^2 * round_up(c_out / groups, fc_winograd_mr(isa)) *
 * (c_in / groups) elements, reading w through ws (NULL: contiguous OIHW); it returns
 * FC_ENONFINITE (u written whole) when u holds inf or NaN.  fwd computes
 * y = conv2d(x, w) + bias from u; bias may be NULL; its per-thread buffers stay within
 * workspace_bytes (at least one block of tiles each).  profile, when not NULL, accumulates the
 * thread-seconds of the phases {transform_input, transform_filter, batched_gemm, transform_output}. */
int fc_winograd_mr(int64_t isa);  /* output channels per block of u for the ISA a call runs */
int fc_conv2d_transform_filter_winograd_f2k3_f32(const float *w, const fc_weight_strides *ws, float *u,
                                                 const fc_conv2d_shape *s, int n_threads, double *profile);
int fc_conv2d_transform_filter_winograd_f2k3_f64(const double *w, const fc_weight_strides *ws, double *u,
                                                 const fc_conv2d_shape *s, int n_threads, double *profile);
int fc_conv2d_transform_filter_winograd_f4k3_f32(const float *w, const fc_weight_strides *ws, float *u,
                                                 const fc_conv2d_shape *s, int n_threads, double *profile);
int fc_conv2d_transform_filter_winograd_f4k3_f64(const double *w, const fc_weight_strides *ws, double *u,
                                                 const fc_conv2d_shape *s, int n_threads, double *profile);
int fc_conv2d_fwd_winograd_f2k3_f32(const float *x, const float *u, const float *bias, float *y,
                                    const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                                    double *profile);
int fc_conv2d_fwd_winograd_f2k3_f64(const double *x, const double *u, const double *bias, double *y,
                                    const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                                    double *profile);
int fc_conv2d_fwd_winograd_f4k3_f32(const float *x, const float *u, const float *bias, float *y,
                                    const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                                    double *profile);
int fc_conv2d_fwd_winograd_f4k3_f64(const double *x, const double *u, const double *bias, double *y,
                                    const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                                    double *profile);

/* grad_w of conv2d by Winograd F(m x m, 3 x 3), the same problems as fwd: per chunk of tiles
 * (grad_y's m x m tiles, numbered over all images), the input tiles' (BT d B) and grad_y tiles'
 * (AT^T g AT) transforms, one OpenBLAS GEMM per transformed position summing over the tiles, and
 * grad_w = G^T M G.  The transforms of a chunk stay within min(workspace_bytes, 4 MB), but for
 * one run of tiles at least (64 tiles in float32, 32 in float64); the sums M are alpha^2 x out x in. */
int fc_conv2d_bwd_weight_winograd_f2k3_f32(const float *gy, const float *x, float *gw,
                                           const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);
int fc_conv2d_bwd_weight_winograd_f2k3_f64(const double *gy, const double *x, double *gw,
                                           const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);
int fc_conv2d_bwd_weight_winograd_f4k3_f32(const float *gy, const float *x, float *gw,
                                           const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);
int fc_conv2d_bwd_weight_winograd_f4k3_f64(const double *gy, const double *x, double *gw,
                                           const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads);

/* y, idx = max_pool2d(x); idx are flat offsets into each (h, w) plane, PyTorch's convention.
 * idx NULL: y alone, no index computed or stored. */
int fc_maxpool2d_fwd_direct_f32(const float *x, float *y, int64_t *idx,
                                const fc_pool2d_shape *s, int n_threads);
int fc_maxpool2d_fwd_direct_f64(const double *x, double *y, int64_t *idx,
                                const fc_pool2d_shape *s, int n_threads);

/* gx = 0; gx[plane][idx] += gy.  Returns FC_EINDEX (gx then incomplete) if an index is outside
 * its plane, so corrupt indices are an error rather than a wild write. */
int fc_maxpool2d_bwd_direct_f32(const float *gy, const int64_t *idx, float *gx,
                                const fc_pool2d_shape *s, int n_threads);
int fc_maxpool2d_bwd_direct_f64(const double *gy, const int64_t *idx, double *gx,
                                const fc_pool2d_shape *s, int n_threads);

/* Depthwise conv2d (groups = c_in; c_out = groups * the channel multiplier), any stride, padding
 * (negative too) and dilation.  fwd: y = conv2d(x, w) + bias, bias may be NULL, w read through ws
 * (NULL: contiguous); it serves any c_in / groups, though the Python side calls it on depthwise
 * problems only.
 * bwd_data: gx of a problem with c_in / groups = 1, from gy and a contiguous OIHW w.
 * bwd_weight: gw of a problem with c_in / groups = 1. */
int fc_conv2d_fwd_depthwise_f32(const float *x, const float *w, const fc_weight_strides *ws,
                                const float *bias, float *y, const fc_conv2d_shape *s, int n_threads);
int fc_conv2d_fwd_depthwise_f64(const double *x, const double *w, const fc_weight_strides *ws,
                                const double *bias, double *y, const fc_conv2d_shape *s, int n_threads);
int fc_conv2d_bwd_data_depthwise_f32(const float *gy, const float *w, float *gx, const fc_conv2d_shape *s,
                                     int n_threads);
int fc_conv2d_bwd_data_depthwise_f64(const double *gy, const double *w, double *gx, const fc_conv2d_shape *s,
                                     int n_threads);
int fc_conv2d_bwd_weight_depthwise_f32(const float *gy, const float *x, float *gw,
                                       const fc_conv2d_shape *s, int n_threads);
int fc_conv2d_bwd_weight_depthwise_f64(const double *gy, const double *x, double *gw,
                                       const fc_conv2d_shape *s, int n_threads);
