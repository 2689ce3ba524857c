package dev.kdaliens.encoder;

import java.util.Arrays;

/**
 * One model input: name, dtype, shape and row-major data ({@code long[]}, {@code int[]} or
 * {@code float[]} by dtype). It maps one to one onto ExecuTorch's {@code Tensor.fromBlob(data,
 * shape)}.
 */
public final class InputTensor {
  private final String name;
  private final DType dtype;
  private final long[] shape;
  private final long[] longs;
  private final int[] ints;
  private final float[] floats;

  private InputTensor(String name, DType dtype, long[] shape, long[] longs, int[] ints, float[] floats) {
    this.name = name;
    this.dtype = dtype;
    this.shape = shape;
    this.longs = longs;
    this.ints = ints;
    this.floats = floats;
  }

  /** Ids cast to {@code dtype}, as numpy's {@code astype} does. */
  static InputTensor ofIds(String name, DType dtype, long[] shape, long[] ids) {
    switch (dtype) {
      case INT64:
        return new InputTensor(name, dtype, shape, ids.clone(), null, null);
      case INT32: {
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
          out[i] = (int) ids[i];
        }
        return new InputTensor(name, dtype, shape, null, out, null);
      }
      default: {
        float[] out = new float[ids.length];
        for (int i = 0; i < ids.length; i++) {
          out[i] = (float) ids[i];
        }
        return new InputTensor(name, dtype, shape, null, null, out);
      }
    }
  }

  /** A boolean mask cast to {@code dtype} (1 for true, 0 for false). */
  static InputTensor ofMask(String name, DType dtype, long[] shape, boolean[] mask) {
    long[] ids = new long[mask.length];
    for (int i = 0; i < mask.length; i++) {
      ids[i] = mask[i] ? 1 : 0;
    }
    return ofIds(name, dtype, shape, ids);
  }

  public String name() {
    return name;
  }

  public DType dtype() {
    return dtype;
  }

  /** The shape (a copy). */
  public long[] shape() {
    return shape.clone();
  }

  /** Number of elements. */
  public int numel() {
    long n = 1;
    for (long s : shape) {
      n *= s;
    }
    return (int) n;
  }

  /** The data of an int64 input (not a copy: do not modify). */
  public long[] longData() {
    requireType(DType.INT64);
    return longs;
  }

  /** The data of an int32 input (not a copy: do not modify). */
  public int[] intData() {
    requireType(DType.INT32);
    return ints;
  }

  /** The data of a float32 input (not a copy: do not modify). */
  public float[] floatData() {
    requireType(DType.FLOAT32);
    return floats;
  }

  /** Element {@code i} (row-major) as a double, whatever the dtype. */
  public double valueAt(int i) {
    switch (dtype) {
      case INT64:
        return longs[i];
      case INT32:
        return ints[i];
      default:
        return floats[i];
    }
  }

  private void requireType(DType want) {
    if (dtype != want) {
      throw new IllegalStateException("input '" + name + "' is " + dtype.jsonName() + ", not " + want.jsonName());
    }
  }

  /** Rows {@code from..to} of dimension 1 (the candidates of a {@code (1, N, ...)} input). */
  InputTensor sliceDim1(int from, int to) {
    if (shape.length < 2 || shape[0] != 1) {
      throw new IllegalStateException("input '" + name + "' has no candidate dimension: " + Arrays.toString(shape));
    }
    int inner = 1;
    for (int k = 2; k < shape.length; k++) {
      inner *= (int) shape[k];
    }
    long[] newShape = shape.clone();
    newShape[1] = to - from;
    int a = from * inner;
    int b = to * inner;
    switch (dtype) {
      case INT64:
        return new InputTensor(name, dtype, newShape, Arrays.copyOfRange(longs, a, b), null, null);
      case INT32:
        return new InputTensor(name, dtype, newShape, null, Arrays.copyOfRange(ints, a, b), null);
      default:
        return new InputTensor(name, dtype, newShape, null, null, Arrays.copyOfRange(floats, a, b));
    }
  }

  @Override
  public String toString() {
    return name + " " + dtype.jsonName() + Arrays.toString(shape);
  }
}
