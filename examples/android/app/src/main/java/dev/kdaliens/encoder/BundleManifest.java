package dev.kdaliens.encoder;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * A bundle's {@code manifest.json}, checked as {@code kdaliens.sdk.bundle.validate_manifest}
 * checks it, plus what a device needs from it: the model file, the input signature (names,
 * dtypes, shapes, in the model's order), the candidate limit and the {@link FeatureSpec}.
 *
 * <p>Artifact hashes are not verified here (that needs the files); an app that downloads
 * bundles should compare the model file's SHA-256 with {@link #artifactSha256}.
 */
public final class BundleManifest {
  /** The manifest layout this encoder reads. */
  public static final int FORMAT_VERSION = 1;

  private static final List<String> REQUIRED_KEYS = Arrays.asList("format_version", "target", "quantization",
      "model_file", "artifacts", "signature", "feature_spec", "parity", "source");
  /** Bundle targets; {@code tflite} is the older name of {@code litert}. */
  private static final List<String> TARGETS = Arrays.asList("executorch", "onnx", "litert", "tflite");

  private final Map<String, Object> raw;
  private final String target;
  private final String quantization;
  private final String modelFile;
  private final String method;
  private final int maxCandidates;
  private final List<InputSpec> inputs;
  private final FeatureSpec spec;

  private BundleManifest(Map<String, Object> raw, String target, String quantization, String modelFile,
      String method, int maxCandidates, List<InputSpec> inputs, FeatureSpec spec) {
    this.raw = raw;
    this.target = target;
    this.quantization = quantization;
    this.modelFile = modelFile;
    this.method = method;
    this.maxCandidates = maxCandidates;
    this.inputs = Collections.unmodifiableList(inputs);
    this.spec = spec;
  }

  /** Parses and checks the text of a {@code manifest.json}. */
  public static BundleManifest parse(String json) {
    Object doc;
    try {
      doc = Json.parse(json);
    } catch (EncoderException e) {
      throw new EncoderException("manifest.json: " + e.getMessage(), e);
    }
    return fromJson(doc);
  }

  /**
   * Checks a parsed manifest.
   *
   * @throws EncoderException listing every schema problem, or naming the bad feature_spec key
   */
  public static BundleManifest fromJson(Object doc) {
    String path = "manifest";
    if (!(doc instanceof Map)) {
      throw new EncoderException(path + ": not a JSON object");
    }
    Map<String, Object> m = Json.asObject(doc, path);
    List<String> problems = new ArrayList<>();
    for (String k : REQUIRED_KEYS) {
      if (!m.containsKey(k)) {
        problems.add("missing key '" + k + "'");
      }
    }
    if (!problems.isEmpty()) {
      throw new EncoderException(path + ": " + String.join("; ", problems));
    }
    Object version = m.get("format_version");
    if (!(version instanceof Number) || ((Number) version).doubleValue() != FORMAT_VERSION) {
      problems.add("format_version " + Tokens.describe(version) + " is not supported (this encoder reads "
          + FORMAT_VERSION + ")");
    }
    if (!TARGETS.contains(m.get("target"))) {
      problems.add("target " + Tokens.describe(m.get("target")) + " not in " + TARGETS);
    }
    Object quant = m.get("quantization");
    if (!"int8".equals(quant) && !"none".equals(quant)) {
      problems.add("quantization " + Tokens.describe(quant) + " is not int8 or none");
    }
    Object arts = m.get("artifacts");
    Object modelFile = m.get("model_file");
    if (!(arts instanceof Map) || !(modelFile instanceof String) || !((Map<?, ?>) arts).containsKey(modelFile)) {
      problems.add("artifacts must map file names to sha256 and include model_file");
    } else {
      for (Map.Entry<?, ?> e : ((Map<?, ?>) arts).entrySet()) {
        String f = String.valueOf(e.getKey());
        if (!(e.getValue() instanceof String) || ((String) e.getValue()).length() != 64) {
          problems.add("artifact '" + f + "': sha256 must be 64 hex characters");
        }
        if (f.contains("/") || f.contains("\\") || f.startsWith(".")) {
          problems.add("artifact '" + f + "': must be a plain file name");
        }
      }
    }
    Object sig = m.get("signature");
    if (!(sig instanceof Map) || !((Map<?, ?>) sig).keySet().containsAll(
        Arrays.asList("inputs", "outputs", "max_candidates"))) {
      problems.add("signature needs inputs, outputs and max_candidates");
    }
    Object parity = m.get("parity");
    if (!(parity instanceof Map)) {
      problems.add("parity must be an object");
    } else {
      for (String k : Arrays.asList("max_abs_diff", "auc_reference", "auc_exported")) {
        if (!((Map<?, ?>) parity).containsKey(k)) {
          problems.add("parity lacks '" + k + "'");
        }
      }
    }
    if (!problems.isEmpty()) {
      throw new EncoderException(path + ": " + String.join("; ", problems));
    }

    FeatureSpec spec = FeatureSpec.fromJson(m.get("feature_spec"), path + ".feature_spec");
    Map<String, Object> s = Json.asObject(sig, path + ".signature");
    List<Object> rawOutputs = Json.asArray(s.get("outputs"), path + ".signature.outputs");
    List<Object> outNames = new ArrayList<>();
    for (Object o : rawOutputs) {
      outNames.add(o instanceof Map ? ((Map<?, ?>) o).get("name") : null);
    }
    if (!outNames.equals(Arrays.asList("score", "click"))) {
      throw new EncoderException(path + ".signature.outputs: must be score, click; got " + outNames);
    }
    int maxCand = Field.pyIntIn(s.get("max_candidates"), path + ".signature.max_candidates", 1, Integer.MAX_VALUE);
    String method = s.containsKey("method") ? Json.asString(s.get("method"), path + ".signature.method") : "forward";
    List<Object> rawInputs = Json.asArray(s.get("inputs"), path + ".signature.inputs");
    List<InputSpec> inputs = new ArrayList<>(rawInputs.size());
    for (int i = 0; i < rawInputs.size(); i++) {
      inputs.add(InputSpec.fromJson(rawInputs.get(i), path + ".signature.inputs[" + i + "]", spec));
    }
    return new BundleManifest(m, (String) m.get("target"), (String) quant, (String) modelFile, method,
        maxCand, inputs, spec);
  }

  /** The whole parsed manifest (read-only by convention). */
  public Map<String, Object> raw() {
    return raw;
  }

  /** {@code executorch}, {@code onnx} or {@code litert} ({@code tflite} in older bundles). */
  public String target() {
    return target;
  }

  /** {@code int8} or {@code none}. */
  public String quantization() {
    return quantization;
  }

  /** The model file's name inside the bundle ({@code model.pte} for ExecuTorch). */
  public String modelFile() {
    return modelFile;
  }

  /** The expected SHA-256 (hex) of an artifact, or null when it is not listed. */
  public String artifactSha256(String file) {
    Object v = ((Map<?, ?>) raw.get("artifacts")).get(file);
    return v instanceof String ? (String) v : null;
  }

  /** The program method to run (ExecuTorch: {@code forward}). */
  public String method() {
    return method;
  }

  /** The most candidates one model call takes; more are scored in chunks. */
  public int maxCandidates() {
    return maxCandidates;
  }

  /** The model inputs, in the model's positional order. */
  public List<InputSpec> inputs() {
    return inputs;
  }

  public FeatureSpec spec() {
    return spec;
  }

  /** One model input of the signature. */
  public static final class InputSpec {
    /** What an input carries, from its name prefix. */
    public enum Source { USER, HISTORY, HISTORY_MASK, CANDIDATE }

    public final String name;
    public final DType dtype;
    public final Source source;
    /** The field (user or item) or history array the input carries. */
    public final String key;
    /** Ids per row: 1, or a multi field's max_len. */
    public final int width;

    private InputSpec(String name, DType dtype, Source source, String key, int width) {
      this.name = name;
      this.dtype = dtype;
      this.source = source;
      this.key = key;
      this.width = width;
    }

    static InputSpec fromJson(Object json, String path, FeatureSpec spec) {
      Map<String, Object> d = Json.asObject(json, path);
      String name = Json.asString(Json.require(d, "name", path), path + ".name");
      String where = path + " ('" + name + "')";
      DType dtype = DType.fromJson(Json.require(d, "dtype", where), where + ".dtype");
      List<Object> shape = Json.asArray(Json.require(d, "shape", where), where + ".shape");
      Source source;
      String key;
      int width;
      if (name.startsWith("user_")) {
        key = name.substring(5);
        Field f = spec.userField(key);
        if (f == null) {
          throw new EncoderException(where + ": no user field '" + key + "' in the feature spec");
        }
        source = Source.USER;
        width = f.width();
      } else if (name.startsWith("cand_")) {
        key = name.substring(5);
        if (!spec.hasItemField(key)) {
          throw new EncoderException(where + ": no item field '" + key + "' in the feature spec");
        }
        source = Source.CANDIDATE;
        width = spec.itemField(key).width();
      } else if (name.equals("hist_mask")) {
        source = Source.HISTORY_MASK;
        key = name;
        width = 1;
      } else if (name.equals("hist_event") || name.equals("hist_time_gap")) {
        source = Source.HISTORY;
        key = name;
        width = 1;
      } else if (name.startsWith("hist_") && spec.historyItemFields().contains(name.substring(5))) {
        source = Source.HISTORY;
        key = name;
        width = spec.itemField(name.substring(5)).width();
      } else {
        throw new EncoderException(where + ": the encoder does not produce this input (expected user_<field>, "
            + "hist_<history item field>, hist_event, hist_time_gap, hist_mask or cand_<item field>)");
      }
      int rank = source == Source.USER ? 1 : 2;
      int expected = rank + (width > 1 || isMulti(spec, source, key) ? 1 : 0);
      if (shape.size() != expected) {
        throw new EncoderException(where + ".shape: expected " + expected + " dimensions, got " + shape);
      }
      return new InputSpec(name, dtype, source, key, width);
    }

    private static boolean isMulti(FeatureSpec spec, Source source, String key) {
      Field f;
      if (source == Source.USER) {
        f = spec.userField(key);
      } else if (source == Source.CANDIDATE) {
        f = spec.itemField(key);
      } else if (source == Source.HISTORY && key.startsWith("hist_") && spec.hasItemField(key.substring(5))
          && !key.equals("hist_event") && !key.equals("hist_time_gap")) {
        f = spec.itemField(key.substring(5));
      } else {
        return false;
      }
      return f instanceof MultiField;
    }

    @Override
    public String toString() {
      return name + " (" + dtype.jsonName() + ")";
    }
  }
}
