/* Both element types of the small-GEMM micro-kernel for one instruction set: included by
 * gemm_micro.h with these macros defined:
 *
 *   FO_TARGET, FO_VBYTES, FO_MR   as gemm_micro_impl.h reads them
 *   FO_ISA                        the functions' suffix (portable, avx2, avx512)
 *   FO_HAS_TRANSPOSE (optional)   pack B with the in-register transposes (x86 only)
 */

#define FO_PASTE(a, b, c) a##b##c
#define FO_NAME(a, b, c) FO_PASTE(a, b, c)

#define FO_T float
#define FO_FN(x) FO_NAME(fo_##x, _s_, FO_ISA)
#ifdef FO_HAS_TRANSPOSE
#define FO_TRANSPOSE fo_transpose8_s
#define FO_TBLK 8
#endif
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#undef FO_TRANSPOSE
#undef FO_TBLK

#define FO_T double
#define FO_FN(x) FO_NAME(fo_##x, _d_, FO_ISA)
#ifdef FO_HAS_TRANSPOSE
#define FO_TRANSPOSE fo_transpose4_d
#define FO_TBLK 4
#endif
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#undef FO_TRANSPOSE
#undef FO_TBLK

#undef FO_PASTE
#undef FO_NAME
