package dev.kdaliens.encoder;

/**
 * A number, bucketized by sorted boundaries: id {@code 2 + bisect_right(boundaries, value)}.
 * A missing, unparseable or non-finite value encodes to 1.
 */
public final class NumericField extends Field {
  private final double[] boundaries;

  public NumericField(String name, double[] boundaries) {
    this(name, boundaries, "field '" + name + "'");
  }

  NumericField(String name, double[] boundaries, String path) {
    super(name);
    this.boundaries = boundaries.clone();
    for (int i = 0; i < this.boundaries.length; i++) {
      double b = this.boundaries[i];
      if (Double.isNaN(b) || Double.isInfinite(b) || (i > 0 && !(this.boundaries[i - 1] < b))) {
        throw new EncoderException(path + ": boundaries must be finite and strictly increasing");
      }
    }
  }

  @Override
  public String kind() {
    return "numeric";
  }

  @Override
  public int cardinality() {
    return boundaries.length + 1 + (int) Tokens.N_RESERVED;
  }

  public double[] boundaries() {
    return boundaries.clone();
  }

  /** The bucket id of a number (NaN and infinities: 1). */
  public long encodeNumber(double v) {
    if (Double.isNaN(v) || Double.isInfinite(v)) {
      return Tokens.OOV_ID;
    }
    int lo = 0;
    int hi = boundaries.length;
    while (lo < hi) { // first boundary > v
      int mid = (lo + hi) >>> 1;
      if (v < boundaries[mid]) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo + Tokens.N_RESERVED;
  }

  /** The bucket id of a raw value, through {@link Tokens#toFloat}. */
  public long encode(Object value) {
    return encodeNumber(Tokens.toFloat(value));
  }

  @Override
  public void encodeInto(Object value, long[] out, int offset) {
    out[offset] = encode(value);
  }
}
