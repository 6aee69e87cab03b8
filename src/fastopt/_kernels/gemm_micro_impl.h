/* One instantiation of the small-GEMM micro-kernel: included by gemm_micro.h once per
 * (element type, instruction set) with these macros defined:
 *
 *   FO_T       float or double
 *   FO_VBYTES  bytes in one vector (16: SSE / NEON / scalar lowering, 32: AVX2, 64: AVX-512)
 *   FO_MR      rows of C held in registers (2 vectors of columns each)
 *   FO_FN(x)   x with the instantiation's suffix appended
 *   FO_TARGET  the function attribute that enables the instruction set, or nothing
 *   FO_TRANSPOSE, FO_TBLK (optional): an in-register FO_TBLK² transpose for packing B
 *
 * C (m×n, row-major, ld ldc) = alpha·op(A)·op(B) + beta·C, as BLAS defines it (beta = 0:
 * C is not read). The vectors are GCC/clang vector extensions, so one source serves every
 * instruction set: the target attribute decides what they compile to.
 *
 * Order of the sums: every C element is one chain of multiply-adds over p = 0, 1, … k−1
 * in order, restarted every FO_KC terms (the chunk's sum is then added to C). It depends
 * on the shapes only, never on the thread count or the tile a caller cut.
 */

#define FO_VL ((int)(FO_VBYTES / sizeof(FO_T)))
#define FO_NR (2 * FO_VL)

typedef FO_T FO_FN(vec) __attribute__((vector_size(FO_VBYTES)));

static inline __attribute__((always_inline)) FO_TARGET FO_FN(vec)
FO_FN(load)(const FO_T* p)
{
    FO_FN(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) FO_TARGET void
FO_FN(store)(FO_T* p, FO_FN(vec) v)
{
    memcpy(p, &v, sizeof v);
}

/* One MR×(NV·VL) block of C from kc terms: a(r, p) = a[r·ars + p·aps]; the B rows are
 * bp + p·bs, NV·VL wide (packed and zero-padded past nr, or B itself). MR and NV are
 * compile-time constants at every call site, so acc[][] lives in registers. */
static inline __attribute__((always_inline)) FO_TARGET void
FO_FN(block)(const int MR, const int NV, int kc,
             const FO_T* restrict a, ptrdiff_t ars, ptrdiff_t aps,
             const FO_T* restrict bp, ptrdiff_t bs,
             FO_T* restrict c, ptrdiff_t ldc, int nr,
             FO_T alpha, FO_T beta, int first)
{
    FO_FN(vec) acc[FO_MR][2];
    const FO_FN(vec) zero = {0};
FO_UNROLL
    for (int r = 0; r < MR; r++) {
        acc[r][0] = zero;
        acc[r][1] = zero;
    }
    for (int p = 0; p < kc; p++) {
        const FO_FN(vec) b0 = FO_FN(load)(bp + p * bs);
        const FO_FN(vec) b1 = NV > 1 ? FO_FN(load)(bp + p * bs + FO_VL) : zero;
        const FO_T* ap = a + p * aps;
FO_UNROLL
        for (int r = 0; r < MR; r++) {
            const FO_T x = ap[r * ars];
            acc[r][0] += x * b0;
            if (NV > 1)
                acc[r][1] += x * b1;
        }
    }
    if (nr == NV * FO_VL) {
FO_UNROLL
        for (int r = 0; r < MR; r++) {
            FO_T* cr = c + r * ldc;
FO_UNROLL
            for (int v = 0; v < NV; v++) {
                FO_FN(vec) out = alpha * acc[r][v];
                if (!first)
                    out += FO_FN(load)(cr + v * FO_VL);
                else if (beta != 0)
                    out += beta * FO_FN(load)(cr + v * FO_VL);
                FO_FN(store)(cr + v * FO_VL, out);
            }
        }
    } else {
        /* Ragged right edge: through a buffer, element by element. */
        FO_T tmp[FO_NR];
        for (int r = 0; r < MR; r++) {
            FO_T* cr = c + r * ldc;
            FO_FN(store)(tmp, acc[r][0]);
            FO_FN(store)(tmp + FO_VL, acc[r][1]);
            for (int j = 0; j < nr; j++) {
                FO_T out = alpha * tmp[j];
                if (!first)
                    out += cr[j];
                else if (beta != 0)
                    out += beta * cr[j];
                cr[j] = out;
            }
        }
    }
}

#define FO_BLOCK_CASE(R)                                                            \
    case R:                                                                         \
        if (nv == 2)                                                                \
            FO_FN(block)(R, 2, kc, a, ars, aps, bp, bs, c, ldc, nr, alpha, beta, first); \
        else                                                                        \
            FO_FN(block)(R, 1, kc, a, ars, aps, bp, bs, c, ldc, nr, alpha, beta, first); \
        break;

/* mr (1..FO_MR) rows: one specialised block per row count, so no row is wasted. */
static FO_TARGET void
FO_FN(rows)(int mr, int nv, int kc, const FO_T* restrict a, ptrdiff_t ars, ptrdiff_t aps,
            const FO_T* restrict bp, ptrdiff_t bs, FO_T* restrict c, ptrdiff_t ldc, int nr,
            FO_T alpha, FO_T beta, int first)
{
    switch (mr) {
        FO_BLOCK_CASE(1)
        FO_BLOCK_CASE(2)
        FO_BLOCK_CASE(3)
        FO_BLOCK_CASE(4)
#if FO_MR >= 6
        FO_BLOCK_CASE(5)
        FO_BLOCK_CASE(6)
#endif
#if FO_MR >= 8
        FO_BLOCK_CASE(7)
        FO_BLOCK_CASE(8)
#endif
#if FO_MR >= 12
        FO_BLOCK_CASE(9)
        FO_BLOCK_CASE(10)
        FO_BLOCK_CASE(11)
        FO_BLOCK_CASE(12)
#endif
        default:
            break;
    }
}
#undef FO_BLOCK_CASE

/* op(B)[p0:p0+kc, j0:j0+nr] into bp (kc rows of w = NV·VL, zero past nr). */
static FO_TARGET void
FO_FN(pack_b)(FO_T* restrict bp, int w, const FO_T* restrict b, int tb, ptrdiff_t ldb,
              int p0, int kc, int j0, int nr)
{
    if (tb) {
        /* B is n×k: column j of op(B) is row j of B. Eight columns at a time, so eight
         * rows of B stream together and each bp row is written in one piece. */
        int j = 0;
#ifdef FO_TRANSPOSE
        for (; j + FO_TBLK <= nr; j += FO_TBLK) {
            const FO_T* s = b + (ptrdiff_t)(j0 + j) * ldb + p0;
            int p = 0;
            for (; p + FO_TBLK <= kc; p += FO_TBLK)
                FO_TRANSPOSE(s + p, ldb, bp + (ptrdiff_t)p * w + j, w);
            for (; p < kc; p++)
                for (int q = 0; q < FO_TBLK; q++)
                    bp[(ptrdiff_t)p * w + j + q] = s[q * ldb + p];
        }
#endif
        for (; j + 8 <= nr; j += 8) {
            const FO_T* s = b + (ptrdiff_t)(j0 + j) * ldb + p0;
            for (int p = 0; p < kc; p++) {
                FO_T* d = bp + (ptrdiff_t)p * w + j;
FO_UNROLL
                for (int q = 0; q < 8; q++)
                    d[q] = s[q * ldb + p];
            }
        }
        for (; j < nr; j++) {
            const FO_T* s = b + (ptrdiff_t)(j0 + j) * ldb + p0;
            for (int p = 0; p < kc; p++)
                bp[(ptrdiff_t)p * w + j] = s[p];
        }
    } else {
        for (int p = 0; p < kc; p++)
            memcpy(bp + (ptrdiff_t)p * w, b + (ptrdiff_t)(p0 + p) * ldb + j0,
                   (size_t)nr * sizeof(FO_T));
    }
    if (nr < w)
        for (int p = 0; p < kc; p++)
            for (int j = nr; j < w; j++)
                bp[(ptrdiff_t)p * w + j] = 0;
}

/* op(A)ᵀ[p0:p0+kc, 0:m] of a transposed A (k×m, ld lda) into MR-row panels: panel q holds
 * rows q·MR… of op(A) as kc × MR (zero past m), so a block reads one contiguous stream. */
static FO_TARGET void
FO_FN(pack_a)(FO_T* restrict ap, const FO_T* restrict a, ptrdiff_t lda, int p0, int kc, int m)
{
    /* Eight rows of A at a time, panel after panel: the eight source lines stay in L1
     * while consecutive panels take their MR columns, and each panel gets 8·MR
     * contiguous elements per visit. */
    const int mfull = m - m % FO_MR;
    for (int p = 0; p < kc; p += 8) {
        const int pn = kc - p < 8 ? kc - p : 8;
        for (int i0 = 0; i0 < mfull; i0 += FO_MR) {
            FO_T* d = ap + (ptrdiff_t)i0 * kc + (ptrdiff_t)p * FO_MR;
            for (int q = 0; q < pn; q++)
                memcpy(d + q * FO_MR, a + (ptrdiff_t)(p0 + p + q) * lda + i0,
                       FO_MR * sizeof(FO_T));
        }
        if (mfull < m) {
            FO_T* d = ap + (ptrdiff_t)mfull * kc + (ptrdiff_t)p * FO_MR;
            for (int q = 0; q < pn; q++) {
                const FO_T* s = a + (ptrdiff_t)(p0 + p + q) * lda;
                for (int r = 0; r < FO_MR; r++)
                    d[q * FO_MR + r] = mfull + r < m ? s[mfull + r] : 0;
            }
        }
    }
}

/* C (m×1) = alpha·A·x + beta·C for a row-major A: one dot product per row, vectorised
 * along k (four rows at a time), lanes summed in lane order, then the ragged tail. */
static FO_TARGET void
FO_FN(gemv)(int m, int k, FO_T alpha, const FO_T* restrict a, ptrdiff_t lda,
            const FO_T* restrict x, FO_T beta, FO_T* restrict c, ptrdiff_t ldc)
{
    const FO_FN(vec) zero = {0};
    const int kv = k - k % FO_VL;
    int i = 0;
    for (; i < m; i += 4) {
        const int rows = m - i < 4 ? m - i : 4;
        FO_FN(vec) acc[4] = {zero, zero, zero, zero};
        FO_T s[4];
        if (rows == 4) {
            for (int p = 0; p < kv; p += FO_VL) {
                const FO_FN(vec) xv = FO_FN(load)(x + p);
FO_UNROLL
                for (int r = 0; r < 4; r++)
                    acc[r] += FO_FN(load)(a + (i + r) * lda + p) * xv;
            }
        } else {
            for (int r = 0; r < rows; r++)
                for (int p = 0; p < kv; p += FO_VL)
                    acc[r] += FO_FN(load)(a + (i + r) * lda + p) * FO_FN(load)(x + p);
        }
        for (int r = 0; r < rows; r++) {
            FO_T lanes[FO_VL];
            FO_T t = 0;
            FO_FN(store)(lanes, acc[r]);
            for (int l = 0; l < FO_VL; l++)
                t += lanes[l];
            for (int p = kv; p < k; p++)
                t += a[(i + r) * lda + p] * x[p];
            s[r] = t;
        }
        for (int r = 0; r < rows; r++) {
            FO_T out = alpha * s[r];
            if (beta != 0)
                out += beta * c[(i + r) * ldc];
            c[(i + r) * ldc] = out;
        }
    }
}

static FO_TARGET void
FO_FN(gemm)(int ta, int tb, int m, int n, int k, FO_T alpha, const FO_T* a, int lda,
            const FO_T* b, int ldb, FO_T beta, FO_T* c, int ldc)
{
    /* A row-major: a(i, p) = a[i·lda + p]; transposed (k×m): a[p·lda + i]. */
    ptrdiff_t ars = ta ? 1 : lda, aps = ta ? lda : 1;
    FO_T bp[FO_KC * FO_NR] __attribute__((aligned(64)));
    FO_T* apack = NULL;
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(ptrdiff_t)i * ldc + j] = beta != 0 ? beta * c[(ptrdiff_t)i * ldc + j] : 0;
        return;
    }
    if (n == 1 && !ta && (tb || ldb == 1 || k <= FO_KC * FO_NR)) {
        const FO_T* x = b;
        if (!tb && ldb != 1) {
            for (int p = 0; p < k; p++)
                bp[p] = b[(ptrdiff_t)p * ldb];
            x = bp;
        }
        FO_FN(gemv)(m, k, alpha, a, lda, x, beta, c, ldc);
        return;
    }
    if (n == 1 && ta && ldc == 1 && (tb || ldb == 1 || k <= FO_KC * FO_NR)) {
        /* C (m×1, contiguous) = Aᵀ·x is the row Cᵀ = xᵀ·A, A a row-major k×m operand:
         * vectors along m instead of one useful lane per vector. */
        const FO_T* x = b;
        if (!tb && ldb != 1) {
            for (int p = 0; p < k; p++)
                bp[p] = b[(ptrdiff_t)p * ldb];
            x = bp;
        }
        FO_FN(gemm)(0, 0, 1, m, k, alpha, x, k, a, lda, beta, c, m);
        return;
    }
    if (ta && m >= FO_PACK_A_ROWS && n > FO_NR) {
        const int mp = (m + FO_MR - 1) / FO_MR * FO_MR;
        const int kc0 = k < FO_KC ? k : FO_KC;
        apack = (FO_T*)malloc((size_t)mp * kc0 * sizeof(FO_T));
    }
    for (int p0 = 0; p0 < k; p0 += FO_KC) {
        const int kc = k - p0 < FO_KC ? k - p0 : FO_KC;
        const int first = p0 == 0;
        const FO_T* ablk = a + p0 * aps;
        if (apack) {
            FO_FN(pack_a)(apack, a, lda, p0, kc, m);
            ablk = apack;
            ars = 1;
            aps = FO_MR;
        }
        for (int j0 = 0; j0 < n; j0 += FO_NR) {
            const int nr = n - j0 < FO_NR ? n - j0 : FO_NR;
            const int nv = nr > FO_VL ? 2 : 1;
            const FO_T* panel;
            ptrdiff_t bs;
            if (!tb && nr == nv * FO_VL && (m < FO_PACK_B_ROWS || ldb < FO_PACK_B_LD)) {
                /* Whole vectors of a row-major B, used by few rows or already dense:
                 * read it in place. */
                panel = b + (ptrdiff_t)p0 * ldb + j0;
                bs = ldb;
            } else {
                FO_FN(pack_b)(bp, nv * FO_VL, b, tb, ldb, p0, kc, j0, nr);
                panel = bp;
                bs = nv * FO_VL;
            }
            for (int i0 = 0; i0 < m; i0 += FO_MR) {
                const int mr = m - i0 < FO_MR ? m - i0 : FO_MR;
                const FO_T* ai = apack ? ablk + (ptrdiff_t)i0 * kc : ablk + i0 * ars;
                FO_FN(rows)(mr, nv, kc, ai, ars, aps, panel, bs,
                            c + (ptrdiff_t)i0 * ldc + j0, ldc, nr, alpha, beta, first);
            }
        }
    }
    free(apack);
}

#undef FO_VL
#undef FO_NR
