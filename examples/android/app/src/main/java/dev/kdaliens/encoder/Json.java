package dev.kdaliens.encoder;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small, self-contained JSON reader and writer (no Android or third-party classes).
 *
 * <p>{@link #parse} reads a document into plain Java values, the way Python's {@code json}
 * module does:
 *
 * <ul>
 *   <li>object: {@code LinkedHashMap<String, Object>} (key order kept; a repeated key keeps its last value);
 *   <li>array: {@code ArrayList<Object>};
 *   <li>string: {@code String};
 *   <li>number without fraction or exponent: {@code Long}, or {@code BigInteger} when it does not fit;
 *   <li>any other number: {@code Double} (so {@code 5} and {@code 5.0} stay distinguishable, as in Python);
 *   <li>{@code true}/{@code false}: {@code Boolean}; {@code null}: {@code null}.
 * </ul>
 *
 * <p>Like Python's reader it also accepts {@code NaN}, {@code Infinity} and {@code -Infinity},
 * which Python writes for non-finite floats (bundle manifests may hold them).
 *
 * <p>{@link #write} produces compact JSON from the same kinds of values; doubles are written
 * with Python's {@code repr}, so a value read, written and read again is unchanged.
 *
 * <p>Malformed input raises {@link EncoderException} with the line and column.
 */
public final class Json {
  private static final int MAX_DEPTH = 512;

  private Json() {}

  /** Parses a whole JSON document. */
  public static Object parse(String text) {
    if (text == null) {
      throw new EncoderException("JSON text is null");
    }
    Parser p = new Parser(text);
    p.skipWhitespace();
    Object value = p.readValue(0);
    p.skipWhitespace();
    if (p.pos < text.length()) {
      throw p.error("unexpected text after the JSON value");
    }
    return value;
  }

  /** Writes a value (Map, List, String, Number, Boolean or null) as compact JSON. */
  public static String write(Object value) {
    StringBuilder sb = new StringBuilder();
    writeValue(sb, value, 0);
    return sb.toString();
  }

  // ------------------------------------------------------------------ typed access

  /** The value as a JSON object, or an error naming {@code path}. */
  @SuppressWarnings("unchecked")
  public static Map<String, Object> asObject(Object value, String path) {
    if (value instanceof Map) {
      return (Map<String, Object>) value;
    }
    throw new EncoderException(path + ": expected a JSON object, got " + Tokens.describe(value));
  }

  /** The value as a JSON array, or an error naming {@code path}. */
  @SuppressWarnings("unchecked")
  public static List<Object> asArray(Object value, String path) {
    if (value instanceof List) {
      return (List<Object>) value;
    }
    throw new EncoderException(path + ": expected a JSON array, got " + Tokens.describe(value));
  }

  /** The value as a string, or an error naming {@code path}. */
  public static String asString(Object value, String path) {
    if (value instanceof String) {
      return (String) value;
    }
    throw new EncoderException(path + ": expected a string, got " + Tokens.describe(value));
  }

  /** {@code obj[key]}, which must be present, or an error naming {@code path.key}. */
  public static Object require(Map<String, Object> obj, String key, String path) {
    if (!obj.containsKey(key)) {
      throw new EncoderException(path + ": missing key '" + key + "'");
    }
    return obj.get(key);
  }

  // ------------------------------------------------------------------ reader

  private static final class Parser {
    final String s;
    int pos;

    Parser(String s) {
      this.s = s;
    }

    EncoderException error(String message) {
      int line = 1;
      int col = 1;
      for (int i = 0; i < pos && i < s.length(); i++) {
        if (s.charAt(i) == '\n') {
          line++;
          col = 1;
        } else {
          col++;
        }
      }
      return new EncoderException("invalid JSON at line " + line + ", column " + col + ": " + message);
    }

    void skipWhitespace() {
      while (pos < s.length()) {
        char c = s.charAt(pos);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
          pos++;
        } else {
          break;
        }
      }
    }

    Object readValue(int depth) {
      if (depth > MAX_DEPTH) {
        throw error("nested deeper than " + MAX_DEPTH + " levels");
      }
      if (pos >= s.length()) {
        throw error("unexpected end of input, expected a value");
      }
      char c = s.charAt(pos);
      switch (c) {
        case '{':
          return readObject(depth);
        case '[':
          return readArray(depth);
        case '"':
          return readString();
        case 't':
          expectWord("true");
          return Boolean.TRUE;
        case 'f':
          expectWord("false");
          return Boolean.FALSE;
        case 'n':
          expectWord("null");
          return null;
        case 'N':
          expectWord("NaN");
          return Double.NaN;
        case 'I':
          expectWord("Infinity");
          return Double.POSITIVE_INFINITY;
        default:
          if (c == '-' || (c >= '0' && c <= '9')) {
            return readNumber();
          }
          throw error("unexpected character '" + printable(c) + "', expected a value");
      }
    }

    void expectWord(String word) {
      if (!s.startsWith(word, pos)) {
        throw error("unexpected character '" + printable(s.charAt(pos)) + "', expected a value");
      }
      pos += word.length();
    }

    Map<String, Object> readObject(int depth) {
      Map<String, Object> out = new LinkedHashMap<>();
      pos++; // '{'
      skipWhitespace();
      if (pos < s.length() && s.charAt(pos) == '}') {
        pos++;
        return out;
      }
      while (true) {
        skipWhitespace();
        if (pos >= s.length() || s.charAt(pos) != '"') {
          throw error("expected a string key in an object");
        }
        String key = readString();
        skipWhitespace();
        if (pos >= s.length() || s.charAt(pos) != ':') {
          throw error("expected ':' after key \"" + key + "\"");
        }
        pos++;
        skipWhitespace();
        out.put(key, readValue(depth + 1));
        skipWhitespace();
        if (pos >= s.length()) {
          throw error("unexpected end of input in an object");
        }
        char c = s.charAt(pos++);
        if (c == '}') {
          return out;
        }
        if (c != ',') {
          pos--;
          throw error("expected ',' or '}' in an object");
        }
      }
    }

    List<Object> readArray(int depth) {
      List<Object> out = new ArrayList<>();
      pos++; // '['
      skipWhitespace();
      if (pos < s.length() && s.charAt(pos) == ']') {
        pos++;
        return out;
      }
      while (true) {
        skipWhitespace();
        out.add(readValue(depth + 1));
        skipWhitespace();
        if (pos >= s.length()) {
          throw error("unexpected end of input in an array");
        }
        char c = s.charAt(pos++);
        if (c == ']') {
          return out;
        }
        if (c != ',') {
          pos--;
          throw error("expected ',' or ']' in an array");
        }
      }
    }

    String readString() {
      pos++; // opening quote
      StringBuilder sb = null;
      int start = pos;
      while (true) {
        if (pos >= s.length()) {
          throw error("unterminated string");
        }
        char c = s.charAt(pos);
        if (c == '"') {
          String out = sb == null ? s.substring(start, pos) : sb.append(s, start, pos).toString();
          pos++;
          return out;
        }
        if (c < 0x20) {
          throw error("control character U+" + String.format("%04X", (int) c) + " in a string (escape it)");
        }
        if (c != '\\') {
          pos++;
          continue;
        }
        if (sb == null) {
          sb = new StringBuilder();
        }
        sb.append(s, start, pos);
        pos++; // backslash
        if (pos >= s.length()) {
          throw error("unterminated escape in a string");
        }
        char e = s.charAt(pos++);
        switch (e) {
          case '"':
            sb.append('"');
            break;
          case '\\':
            sb.append('\\');
            break;
          case '/':
            sb.append('/');
            break;
          case 'b':
            sb.append('\b');
            break;
          case 'f':
            sb.append('\f');
            break;
          case 'n':
            sb.append('\n');
            break;
          case 'r':
            sb.append('\r');
            break;
          case 't':
            sb.append('\t');
            break;
          case 'u':
            if (pos + 4 > s.length()) {
              throw error("truncated \\u escape");
            }
            int code = 0;
            for (int i = 0; i < 4; i++) {
              int d = Character.digit(s.charAt(pos + i), 16);
              if (d < 0) {
                throw error("bad \\u escape");
              }
              code = code * 16 + d;
            }
            pos += 4;
            sb.append((char) code); // surrogate pairs arrive as two escapes, joined by the String
            break;
          default:
            pos--;
            throw error("bad escape '\\" + printable(e) + "'");
        }
        start = pos;
      }
    }

    Object readNumber() {
      int start = pos;
      if (s.charAt(pos) == '-') {
        pos++;
        if (s.startsWith("Infinity", pos)) {
          pos += "Infinity".length();
          return Double.NEGATIVE_INFINITY;
        }
      }
      int intStart = pos;
      while (pos < s.length() && isDigit(s.charAt(pos))) {
        pos++;
      }
      if (pos == intStart) {
        throw error("a number needs digits");
      }
      if (s.charAt(intStart) == '0' && pos - intStart > 1) {
        pos = intStart + 1;
        throw error("numbers must not have leading zeros");
      }
      boolean integral = true;
      if (pos < s.length() && s.charAt(pos) == '.') {
        integral = false;
        pos++;
        int fracStart = pos;
        while (pos < s.length() && isDigit(s.charAt(pos))) {
          pos++;
        }
        if (pos == fracStart) {
          throw error("a number needs digits after '.'");
        }
      }
      if (pos < s.length() && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
        integral = false;
        pos++;
        if (pos < s.length() && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) {
          pos++;
        }
        int expStart = pos;
        while (pos < s.length() && isDigit(s.charAt(pos))) {
          pos++;
        }
        if (pos == expStart) {
          throw error("a number needs digits in its exponent");
        }
      }
      String text = s.substring(start, pos);
      if (!integral) {
        return Double.parseDouble(text); // correctly rounded, as Python's float()
      }
      if (text.length() <= 18) {
        return Long.parseLong(text);
      }
      BigInteger big = new BigInteger(text);
      return big.bitLength() < 64 ? (Object) big.longValue() : big;
    }

    static boolean isDigit(char c) {
      return c >= '0' && c <= '9';
    }

    static String printable(char c) {
      return c < 0x20 ? String.format("\\u%04x", (int) c) : String.valueOf(c);
    }
  }

  // ------------------------------------------------------------------ writer

  private static void writeValue(StringBuilder sb, Object v, int depth) {
    if (depth > MAX_DEPTH) {
      throw new EncoderException("cannot write JSON nested deeper than " + MAX_DEPTH + " levels");
    }
    if (v == null) {
      sb.append("null");
    } else if (v instanceof String) {
      writeString(sb, (String) v);
    } else if (v instanceof Boolean) {
      sb.append(((Boolean) v) ? "true" : "false");
    } else if (v instanceof Double || v instanceof Float) {
      double d = ((Number) v).doubleValue();
      if (Double.isNaN(d)) {
        sb.append("NaN");
      } else if (Double.isInfinite(d)) {
        sb.append(d > 0 ? "Infinity" : "-Infinity");
      } else {
        sb.append(Tokens.floatRepr(d));
      }
    } else if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte
        || v instanceof BigInteger) {
      sb.append(v.toString());
    } else if (v instanceof Map) {
      sb.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
        if (!(e.getKey() instanceof String)) {
          throw new EncoderException("cannot write JSON: object key " + Tokens.describe(e.getKey())
              + " is not a string");
        }
        if (!first) {
          sb.append(',');
        }
        first = false;
        writeString(sb, (String) e.getKey());
        sb.append(':');
        writeValue(sb, e.getValue(), depth + 1);
      }
      sb.append('}');
    } else if (v instanceof List) {
      sb.append('[');
      boolean first = true;
      for (Object item : (List<?>) v) {
        if (!first) {
          sb.append(',');
        }
        first = false;
        writeValue(sb, item, depth + 1);
      }
      sb.append(']');
    } else {
      throw new EncoderException("cannot write a value of type " + v.getClass().getName() + " as JSON");
    }
  }

  private static void writeString(StringBuilder sb, String s) {
    sb.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"':
          sb.append("\\\"");
          break;
        case '\\':
          sb.append("\\\\");
          break;
        case '\n':
          sb.append("\\n");
          break;
        case '\r':
          sb.append("\\r");
          break;
        case '\t':
          sb.append("\\t");
          break;
        default:
          if (c < 0x20 || Character.isSurrogate(c) && !isPairedSurrogate(s, i)) {
            sb.append(String.format("\\u%04x", (int) c));
          } else {
            sb.append(c);
          }
      }
    }
    sb.append('"');
  }

  private static boolean isPairedSurrogate(String s, int i) {
    char c = s.charAt(i);
    if (Character.isHighSurrogate(c)) {
      return i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1));
    }
    return i > 0 && Character.isHighSurrogate(s.charAt(i - 1));
  }
}
