"""Four-lane vector helpers for the memory's node tables, as numba intrinsics.

The memory's coordinate passes gather four consecutive table entries per coordinate (eq. M2)
and add four consecutive deposits (eq. M4): the two nodes of the key's interval, value and
derivative each. Written as four scalar statements, LLVM (through numba) emits four loads and
four scalar adds or stores: it does not combine them into one vector access, because the four
operands come from four different arrays. These helpers emit the vector access directly (one
unaligned 4-lane load, and one store), with the operands inserted into a vector register.
Measured on the 2-core AMD EPYC VM, 256 random intervals per call in a loop inside numba:
the deposit 1.78 -> 0.93 ns per coordinate in float32 (1.87 -> 1.07 in float64), the
gather 1.63 -> 1.06 (1.74 -> 1.30); docs/performance.md.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _operands(context, builder, signature, args):
    """(pointer to arr[r:r + 4] as one vector, the vector loaded there, the scalars
    args[2:6] as a vector, the alignment) for a call (arr, r, a0, a1, a2, a3)."""
    arr_type = signature.args[0]
    ary = context.make_array(arr_type)(context, builder, args[0])
    elt = context.get_data_type(arr_type.dtype)
    ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.VectorType(elt, 4).as_pointer())
    align = context.get_abi_sizeof(elt)
    vec = ir.Constant(ir.VectorType(elt, 4), ir.Undefined)
    for i in range(4):
        x = context.cast(builder, args[2 + i], signature.args[2 + i], arr_type.dtype)
        vec = builder.insert_element(vec, x, ir.Constant(ir.IntType(32), i))
    return ptr, builder.load(ptr, align=align), vec, align


def _contiguous_1d(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"


@intrinsic
def add4(typingctx, arr, r, a0, a1, a2, a3):
    """arr[r:r + 4] += (a0, a1, a2, a3): one vector load, add, store (arr 1-D, contiguous;
    the caller keeps r + 4 <= len(arr), nothing checks it)."""
    def codegen(context, builder, signature, args):
        ptr, old, vec, align = _operands(context, builder, signature, args)
        builder.store(builder.fadd(old, vec), ptr, align=align)
        return context.get_dummy_value()

    return (types.void(arr, r, a0, a1, a2, a3), codegen) if _contiguous_1d(arr) else None


@intrinsic
def dot4(typingctx, arr, r, a0, a1, a2, a3):
    """a0 arr[r] + a1 arr[r + 1] + a2 arr[r + 2] + a3 arr[r + 3], summed as
    (a0 arr[r] + a2 arr[r + 2]) + (a1 arr[r + 1] + a3 arr[r + 3]): one vector load and
    multiply, two adds (arr 1-D, contiguous; r + 4 <= len(arr) unchecked)."""
    def codegen(context, builder, signature, args):
        _, values, vec, _ = _operands(context, builder, signature, args)
        prod = builder.fmul(values, vec)
        i32 = ir.IntType(32)
        lo = builder.shuffle_vector(prod, prod, ir.Constant(ir.VectorType(i32, 2), [0, 1]))
        hi = builder.shuffle_vector(prod, prod, ir.Constant(ir.VectorType(i32, 2), [2, 3]))
        pair = builder.fadd(lo, hi)
        return builder.fadd(builder.extract_element(pair, ir.Constant(i32, 0)),
                            builder.extract_element(pair, ir.Constant(i32, 1)))

    return (arr.dtype(arr, r, a0, a1, a2, a3), codegen) if _contiguous_1d(arr) else None
