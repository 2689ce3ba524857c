package dev.kdaliens.encoder;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * One model input of a user or an item: {@link CategoricalField}, {@link NumericField} or
 * {@link MultiField}. Fields are read from a bundle manifest's {@code feature_spec} with
 * {@link #fromJson}.
 *
 * <p>Id conventions, the same for every field: {@code 0} is padding, {@code 1} is
 * out-of-vocabulary or missing, {@code 2..cardinality-1} are real values.
 */
public abstract class Field {
  private final String name;

  Field(String name) {
    this.name = name;
  }

  /** The attribute's key in raw item or user dicts. */
  public final String name() {
    return name;
  }

  /** {@code categorical}, {@code numeric} or {@code multi}. */
  public abstract String kind();

  /** Number of ids, reserved ones included. */
  public abstract int cardinality();

  /** Ids per row: 1, or {@code max_len} for a multi field. */
  public int width() {
    return 1;
  }

  /**
   * Encodes one raw value into {@code out[offset .. offset + width())}.
   *
   * @throws EncoderException when the value cannot be used (a list as a category, say)
   */
  public abstract void encodeInto(Object value, long[] out, int offset);

  /** Rebuilds a field from its JSON form in a feature spec; {@code path} names it in errors. */
  public static Field fromJson(Object json, String path) {
    Map<String, Object> d = Json.asObject(json, path);
    Object kind = Json.require(d, "kind", path);
    String name = Json.asString(Json.require(d, "name", path), path + ".name");
    String where = path + " ('" + name + "')";
    if ("categorical".equals(kind)) {
      return new CategoricalField(name, vocab(d, where), hashBuckets(d, where), where);
    }
    if ("numeric".equals(kind)) {
      List<Object> raw = Json.asArray(Json.require(d, "boundaries", where), where + ".boundaries");
      double[] b = new double[raw.size()];
      for (int i = 0; i < b.length; i++) {
        b[i] = pyFloat(raw.get(i), where + ".boundaries[" + i + "]");
      }
      return new NumericField(name, b, where);
    }
    if ("multi".equals(kind)) {
      int maxLen = pyIntIn(Json.require(d, "max_len", where), where + ".max_len", 1, 1 << 16);
      Object sep = d.containsKey("separator") ? d.get("separator") : " ";
      String separator = Json.asString(sep, where + ".separator");
      return new MultiField(name, maxLen, vocab(d, where), hashBuckets(d, where), separator, where);
    }
    throw new EncoderException(where + ": unknown field kind " + Tokens.describe(kind)
        + " (expected categorical, numeric or multi)");
  }

  private static List<String> vocab(Map<String, Object> d, String where) {
    Object v = d.get("vocab");
    if (v == null) {
      return null;
    }
    List<Object> raw = Json.asArray(v, where + ".vocab");
    List<String> out = new ArrayList<>(raw.size());
    for (int i = 0; i < raw.size(); i++) {
      out.add(Json.asString(raw.get(i), where + ".vocab[" + i + "]"));
    }
    return out;
  }

  private static Long hashBuckets(Map<String, Object> d, String where) {
    Object v = d.get("hash_buckets");
    if (v == null) {
      return null;
    }
    BigInteger b = pyInt(v, where + ".hash_buckets");
    if (b.bitLength() > 40) {
      throw new EncoderException(where + ".hash_buckets: too large: " + b);
    }
    return b.longValue();
  }

  // ------------------------------------------------------------------ spec values

  /** Python's {@code int(value)} for a spec setting; errors name {@code path}. */
  static BigInteger pyInt(Object value, String path) {
    if (value instanceof Boolean) {
      return ((Boolean) value) ? BigInteger.ONE : BigInteger.ZERO;
    }
    if (value instanceof BigInteger) {
      return (BigInteger) value;
    }
    if (Tokens.isInteger(value)) {
      return BigInteger.valueOf(((Number) value).longValue());
    }
    if (value instanceof Double || value instanceof Float) {
      double d = ((Number) value).doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d)) {
        throw new EncoderException(path + ": expected an integer, got " + Tokens.describe(value));
      }
      return new java.math.BigDecimal(d).toBigInteger(); // truncates toward zero, as int()
    }
    if (value instanceof String) {
      BigInteger b = Tokens.parsePythonInt((String) value);
      if (b != null) {
        return b;
      }
    }
    throw new EncoderException(path + ": expected an integer, got " + Tokens.describe(value));
  }

  /** {@link #pyInt}, required to lie in {@code [min, max]}. */
  static int pyIntIn(Object value, String path, int min, int max) {
    BigInteger b = pyInt(value, path);
    if (b.compareTo(BigInteger.valueOf(min)) < 0 || b.compareTo(BigInteger.valueOf(max)) > 0) {
      throw new EncoderException(path + ": must be between " + min + " and " + max + ", got " + b);
    }
    return b.intValue();
  }

  /** Python's {@code float(value)} for a spec setting; errors name {@code path}. */
  static double pyFloat(Object value, String path) {
    if (value instanceof Boolean) {
      return ((Boolean) value) ? 1.0 : 0.0;
    }
    if (value instanceof Number) {
      return Tokens.toFloat(value);
    }
    if (value instanceof String) {
      Double d = Tokens.parsePythonFloat((String) value);
      if (d != null) {
        return d;
      }
    }
    throw new EncoderException(path + ": expected a number, got " + Tokens.describe(value));
  }
}
