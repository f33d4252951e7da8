//! General f32 GEMM through the `gemm` crate, for uses that need neither batch
//! invariance nor quantized weights (tests, tools, reference computations).
//! Its summation order depends on the shapes and blocking, so results can
//! differ in the last bits between shapes; the model's linear layers use
//! [`super::matmul`] instead.

use super::KernelError;

/// `c = a · b` (or `a · bᵀ` when `trans_b`), all row-major f32:
/// `a` is `[m, k]`, `b` is `[k, n]` (`[n, k]` when `trans_b`), `c` is `[m, n]`
/// and is overwritten.
pub fn gemm_f32(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    trans_b: bool,
) -> Result<(), KernelError> {
    let check = |what: &'static str, got: usize, r: usize, cc: usize| -> Result<(), KernelError> {
        let expected = r
            .checked_mul(cc)
            .ok_or(KernelError::Overflow { what, a: r, b: cc })?;
        if got != expected {
            return Err(KernelError::Length {
                what,
                got,
                m: r,
                n: cc,
                expected,
            });
        }
        Ok(())
    };
    check("gemm a", a.len(), m, k)?;
    if trans_b {
        check("gemm b", b.len(), n, k)?;
    } else {
        check("gemm b", b.len(), k, n)?;
    }
    check("gemm c", c.len(), m, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    // Strides in elements: (column stride, row stride).
    let (b_cs, b_rs) = if trans_b {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    let threads = super::num_threads();
    let par = if threads > 1 && m * n * k >= 1 << 20 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths checked above cover every index the strides reach:
    // a[i * k + p], b[p * n + j] (or b[j * k + p]), c[i * n + j].
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}
