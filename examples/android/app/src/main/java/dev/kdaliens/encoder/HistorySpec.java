package dev.kdaliens.encoder;

import java.math.BigInteger;
import java.util.Map;

/**
 * History settings: the last {@code shortLen} events are always kept; {@code longLen} more are
 * sampled from the older history with {@code seed} (an unsigned 64-bit value, held in a long).
 */
public final class HistorySpec {
  private static final BigInteger U64_MAX = BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE);

  public final int shortLen;
  public final int longLen;
  /** The sampling seed's 64 bits (compare and print it as unsigned). */
  public final long seed;

  public HistorySpec(int shortLen, int longLen, long seed) {
    if (shortLen < 0 || longLen < 0 || (long) shortLen + longLen < 1) {
      throw new EncoderException("history lengths must be >= 0 and sum to >= 1, got short_len=" + shortLen
          + ", long_len=" + longLen);
    }
    this.shortLen = shortLen;
    this.longLen = longLen;
    this.seed = seed;
  }

  /** Slots of the model's history input: shortLen + longLen. */
  public int length() {
    return shortLen + longLen;
  }

  /** Reads {@code {"short_len", "long_len", "seed"}} (defaults 20, 10, 0), as Python does. */
  public static HistorySpec fromJson(Object json, String path) {
    Map<String, Object> d = Json.asObject(json, path);
    BigInteger shortLen = d.containsKey("short_len") ? Field.pyInt(d.get("short_len"), path + ".short_len")
        : BigInteger.valueOf(20);
    BigInteger longLen = d.containsKey("long_len") ? Field.pyInt(d.get("long_len"), path + ".long_len")
        : BigInteger.valueOf(10);
    BigInteger seed = d.containsKey("seed") ? Field.pyInt(d.get("seed"), path + ".seed") : BigInteger.ZERO;
    if (seed.signum() < 0 || seed.compareTo(U64_MAX) > 0) {
      throw new EncoderException(path + ".seed: must fit in 64 unsigned bits, got " + seed);
    }
    if (shortLen.bitLength() > 24 || longLen.bitLength() > 24) {
      throw new EncoderException(path + ": history lengths are too large (short_len=" + shortLen + ", long_len="
          + longLen + ")");
    }
    try {
      return new HistorySpec(shortLen.intValue(), longLen.intValue(), seed.longValue());
    } catch (EncoderException e) {
      throw new EncoderException(path + ": " + e.getMessage(), e);
    }
  }

  @Override
  public String toString() {
    return "HistorySpec(short_len=" + shortLen + ", long_len=" + longLen + ", seed=" + Long.toUnsignedString(seed)
        + ")";
  }
}
