package dev.kdaliens.encoder;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Token rules of the Python SDK ({@code kdaliens/sdk/features.py}), bit for bit.
 *
 * <p>Raw values come as JSON gives them: {@code String}, {@code Long}/{@code Integer}/{@code
 * BigInteger} (Python int), {@code Double}/{@code Float} (Python float), {@code Boolean},
 * {@code null}, {@code List}, {@code Map}. The Python rules these methods reproduce:
 *
 * <ul>
 *   <li>{@link #normalizeToken}: {@code normalize_token}: strings are stripped (Python's notion of
 *       whitespace), ints print as digits, integral floats print as ints ({@code 5.0 -> "5"}), other
 *       floats print with Python's {@code repr}; {@code None}, NaN, infinities and empty strings
 *       are missing. A string is never reparsed: {@code "5.0"} stays {@code "5.0"}.
 *   <li>{@link #toFloat}: {@code to_float}: numbers as they are, strings through Python's {@code
 *       float()} syntax (underscores, Unicode digits, {@code inf}/{@code nan}), NaN for anything
 *       else (booleans included).
 *   <li>{@link #stableHash}: 32-bit FNV-1a over UTF-8 bytes.
 * </ul>
 */
public final class Tokens {
  /** Padding: an empty slot of a multi-valued field or of the history. */
  public static final long PAD_ID = 0;
  /** Out of vocabulary, or missing. */
  public static final long OOV_ID = 1;
  /** Ids below this are reserved; real values start here. */
  public static final long N_RESERVED = 2;

  private static final int FNV_OFFSET = 0x811C9DC5;
  private static final int FNV_PRIME = 0x01000193;
  private static final double TWO_53 = 9007199254740992.0;

  private Tokens() {}

  // ------------------------------------------------------------------ hashing

  /** 32-bit FNV-1a of the token's UTF-8 bytes, as an unsigned value in a long. */
  public static long stableHash(String token) {
    int h = FNV_OFFSET;
    for (byte b : token.getBytes(StandardCharsets.UTF_8)) {
      h ^= (b & 0xff);
      h *= FNV_PRIME;
    }
    return Integer.toUnsignedLong(h);
  }

  // ------------------------------------------------------------------ tokens

  /**
   * The canonical string of a categorical value, or {@code null} when it is missing.
   *
   * @throws EncoderException for a list, an object, or another type that cannot be a category
   */
  public static String normalizeToken(Object value) {
    if (value instanceof String) {
      String s = strip((String) value);
      return s.isEmpty() ? null : s;
    }
    if (value == null) {
      return null;
    }
    if (value instanceof Boolean) {
      return ((Boolean) value) ? "true" : "false";
    }
    if (isInteger(value)) {
      return value.toString();
    }
    if (value instanceof Double || value instanceof Float) {
      double f = ((Number) value).doubleValue();
      if (Double.isNaN(f) || Double.isInfinite(f)) {
        return null;
      }
      if (f == Math.rint(f) && Math.abs(f) < TWO_53) {
        return Long.toString((long) f);
      }
      return floatRepr(f);
    }
    if (value instanceof byte[]) {
      return normalizeToken(new String((byte[]) value, StandardCharsets.UTF_8));
    }
    throw new EncoderException("cannot use a value of type " + typeName(value) + " as a category: "
        + describe(value));
  }

  /** A number of a raw value, NaN when it is missing or unparseable (encoded as OOV). */
  public static double toFloat(Object value) {
    if (value instanceof Double || value instanceof Float) {
      return ((Number) value).doubleValue();
    }
    if (value instanceof Long || value instanceof Integer || value instanceof Short || value instanceof Byte) {
      return ((Number) value).longValue(); // correctly rounded, as Python's float(int)
    }
    if (value instanceof BigInteger) {
      return ((BigInteger) value).doubleValue();
    }
    if (value instanceof String) {
      Double d = parsePythonFloat((String) value);
      return d == null ? Double.NaN : d;
    }
    if (value instanceof byte[]) {
      Double d = parsePythonFloat(new String((byte[]) value, StandardCharsets.UTF_8));
      return d == null ? Double.NaN : d;
    }
    return Double.NaN; // null, booleans, lists, objects
  }

  static boolean isInteger(Object value) {
    return value instanceof Long || value instanceof Integer || value instanceof Short || value instanceof Byte
        || value instanceof BigInteger;
  }

  // ------------------------------------------------------------------ Python whitespace

  /** Whether Python's {@code str.isspace()} holds for this code point. */
  public static boolean isPythonSpace(int cp) {
    switch (cp) {
      case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d:
      case 0x1c: case 0x1d: case 0x1e: case 0x1f: case 0x20:
      case 0x85: case 0xa0: case 0x1680:
      case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
        return true;
      default:
        return cp >= 0x2000 && cp <= 0x200a;
    }
  }

  /** Python's {@code str.strip()}: removes leading and trailing Python whitespace. */
  public static String strip(String s) {
    int start = 0;
    int end = s.length();
    while (start < end && isPythonSpace(s.charAt(start))) {
      start++;
    }
    while (end > start && isPythonSpace(s.charAt(end - 1))) {
      end--;
    }
    return (start == 0 && end == s.length()) ? s : s.substring(start, end);
  }

  // ------------------------------------------------------------------ Python float()

  private static final Pattern FLOAT_SYNTAX =
      Pattern.compile("[+-]?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?");
  private static final Pattern INF_NAN = Pattern.compile("[+-]?(?:inf|infinity|nan)", Pattern.CASE_INSENSITIVE);
  private static final Pattern INT_SYNTAX = Pattern.compile("[+-]?[0-9]+");

  /**
   * Python's {@code float(text)}, or {@code null} where Python raises ValueError.
   *
   * <p>Python first maps non-ASCII whitespace to a space and Unicode decimal digits to ASCII
   * digits, strips ASCII whitespace, then allows single underscores between digits.
   */
  public static Double parsePythonFloat(String text) {
    String s = toAsciiNumber(text);
    if (s == null) {
      return null;
    }
    if (INF_NAN.matcher(s).matches()) {
      String body = s.replaceFirst("^[+-]", "").toLowerCase(java.util.Locale.ROOT);
      boolean negative = s.startsWith("-");
      if (body.equals("nan")) {
        return Double.NaN;
      }
      return negative ? Double.NEGATIVE_INFINITY : Double.POSITIVE_INFINITY;
    }
    if (!FLOAT_SYNTAX.matcher(s).matches()) {
      return null;
    }
    return Double.parseDouble(s);
  }

  /** Python's {@code int(text)} for a string, or {@code null} where Python raises ValueError. */
  static BigInteger parsePythonInt(String text) {
    String s = toAsciiNumber(text);
    if (s == null || !INT_SYNTAX.matcher(s).matches()) {
      return null;
    }
    return new BigInteger(s.startsWith("+") ? s.substring(1) : s);
  }

  /** The ASCII text Python's number parsers see, with underscores removed; null when invalid. */
  private static String toAsciiNumber(String text) {
    StringBuilder sb = new StringBuilder(text.length());
    for (int i = 0; i < text.length(); ) {
      int cp = text.codePointAt(i);
      i += Character.charCount(cp);
      if (cp < 127) {
        sb.append((char) cp);
      } else if (isPythonSpace(cp)) {
        sb.append(' ');
      } else if (Character.getType(cp) == Character.DECIMAL_DIGIT_NUMBER) {
        sb.append((char) ('0' + Character.digit(cp, 10)));
      } else {
        return null;
      }
    }
    int start = 0;
    int end = sb.length();
    while (start < end && isAsciiSpace(sb.charAt(start))) {
      start++;
    }
    while (end > start && isAsciiSpace(sb.charAt(end - 1))) {
      end--;
    }
    String s = sb.substring(start, end);
    if (s.indexOf('_') < 0) {
      return s;
    }
    // Underscores only between digits, as in Python's number literals.
    StringBuilder out = new StringBuilder(s.length());
    char prev = 0;
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '_') {
        if (!(prev >= '0' && prev <= '9')) {
          return null;
        }
      } else {
        if (prev == '_' && !(c >= '0' && c <= '9')) {
          return null;
        }
        out.append(c);
      }
      prev = c;
    }
    return prev == '_' ? null : out.toString();
  }

  private static boolean isAsciiSpace(char c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0d);
  }

  // ------------------------------------------------------------------ Python repr(float)

  /**
   * Python's {@code repr(float)}: the shortest digits that read back to the same double (the
   * closest such string when several have that length), in Python's layout: {@code 0.1},
   * {@code 1e+16}, {@code 1.5e-07}, {@code 100.0}, {@code nan}, {@code inf}.
   */
  public static String floatRepr(double d) {
    if (Double.isNaN(d)) {
      return "nan";
    }
    if (Double.isInfinite(d)) {
      return d > 0 ? "inf" : "-inf";
    }
    if (d == 0.0) {
      return (Double.doubleToRawLongBits(d) < 0) ? "-0.0" : "0.0";
    }
    double abs = Math.abs(d);
    BigDecimal exact = new BigDecimal(abs);
    BigDecimal best = null;
    for (int p = 1; p <= 17 && best == null; p++) {
      BigDecimal lo = exact.round(new MathContext(p, RoundingMode.FLOOR));
      BigDecimal hi = exact.round(new MathContext(p, RoundingMode.CEILING));
      boolean loOk = Double.parseDouble(lo.toString()) == abs;
      boolean hiOk = Double.parseDouble(hi.toString()) == abs;
      if (loOk && hiOk) {
        int c = exact.subtract(lo).compareTo(hi.subtract(exact));
        if (c < 0) {
          best = lo;
        } else if (c > 0) {
          best = hi;
        } else { // exactly halfway: the even last digit
          best = lo.unscaledValue().testBit(0) ? hi : lo;
        }
      } else if (loOk) {
        best = lo;
      } else if (hiOk) {
        best = hi;
      }
    }
    if (best == null) { // cannot happen: 17 significant digits always read back
      best = exact.round(new MathContext(17, RoundingMode.HALF_EVEN));
    }
    best = best.stripTrailingZeros();
    String digits = best.unscaledValue().toString();
    int decpt = digits.length() - best.scale(); // value = 0.digits * 10^decpt
    StringBuilder sb = new StringBuilder(32);
    if (d < 0) {
      sb.append('-');
    }
    if (decpt <= -4 || decpt > 16) {
      sb.append(digits.charAt(0));
      if (digits.length() > 1) {
        sb.append('.').append(digits, 1, digits.length());
      }
      int exp = decpt - 1;
      sb.append('e').append(exp < 0 ? '-' : '+');
      int a = Math.abs(exp);
      if (a < 10) {
        sb.append('0');
      }
      sb.append(a);
    } else if (decpt <= 0) {
      sb.append("0.");
      for (int i = 0; i < -decpt; i++) {
        sb.append('0');
      }
      sb.append(digits);
    } else if (decpt < digits.length()) {
      sb.append(digits, 0, decpt).append('.').append(digits, decpt, digits.length());
    } else {
      sb.append(digits);
      for (int i = digits.length(); i < decpt; i++) {
        sb.append('0');
      }
      sb.append(".0");
    }
    return sb.toString();
  }

  /** Python's {@code str()} of a JSON value, for values of {@code event_vocab}. */
  static String pythonStr(Object value) {
    if (value == null) {
      return "None";
    }
    if (value instanceof Boolean) {
      return ((Boolean) value) ? "True" : "False";
    }
    if (value instanceof Double || value instanceof Float) {
      return floatRepr(((Number) value).doubleValue());
    }
    if (value instanceof String || isInteger(value)) {
      return value.toString();
    }
    throw new EncoderException("expected a string or a number, got " + describe(value));
  }

  // ------------------------------------------------------------------ messages

  /** The Python type name of a JSON value: str, int, float, bool, NoneType, list, dict. */
  public static String typeName(Object value) {
    if (value == null) {
      return "NoneType";
    }
    if (value instanceof String) {
      return "str";
    }
    if (value instanceof Boolean) {
      return "bool";
    }
    if (isInteger(value)) {
      return "int";
    }
    if (value instanceof Double || value instanceof Float) {
      return "float";
    }
    if (value instanceof List) {
      return "list";
    }
    if (value instanceof Map) {
      return "dict";
    }
    return value.getClass().getSimpleName();
  }

  /** A short description of a value for error messages: its type and a prefix of its JSON. */
  public static String describe(Object value) {
    String text;
    try {
      text = Json.write(value);
    } catch (EncoderException e) {
      text = String.valueOf(value);
    }
    if (text.length() > 80) {
      text = text.substring(0, 77) + "...";
    }
    return typeName(value) + " " + text;
  }
}
