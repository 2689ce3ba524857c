package dev.kdaliens.encoder;

/**
 * Input the encoder cannot use: a bad manifest, a malformed JSON document, an unusable
 * value in an item, user or event. The message names the field or the position.
 *
 * <p>It is the Java counterpart of the Python SDK's {@code InputError}.
 */
public class EncoderException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public EncoderException(String message) {
    super(message);
  }

  public EncoderException(String message, Throwable cause) {
    super(message, cause);
  }
}
