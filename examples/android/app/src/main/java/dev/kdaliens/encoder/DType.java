package dev.kdaliens.encoder;

/** Element types of model inputs the encoder produces (names as in the bundle signature). */
public enum DType {
  INT64("int64"),
  INT32("int32"),
  FLOAT32("float32");

  private final String jsonName;

  DType(String jsonName) {
    this.jsonName = jsonName;
  }

  /** The name used in manifests: {@code int64}, {@code int32}, {@code float32}. */
  public String jsonName() {
    return jsonName;
  }

  /** The dtype of a manifest name, or an error naming {@code path}. */
  public static DType fromJson(Object name, String path) {
    for (DType d : values()) {
      if (d.jsonName.equals(name)) {
        return d;
      }
    }
    throw new EncoderException(path + ": dtype " + Tokens.describe(name)
        + " is not supported (expected int64, int32 or float32)");
  }
}
