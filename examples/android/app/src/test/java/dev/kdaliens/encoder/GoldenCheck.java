package dev.kdaliens.encoder;

import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Proves the Java encoder against golden vectors written by the Python SDK
 * ({@code kdaliens.jobs.golden.write_golden}).
 *
 * <pre>
 *   java -cp CLASSES dev.kdaliens.encoder.GoldenCheck golden.json manifest.json
 * </pre>
 *
 * <p>Every unit vector and every model input array of every request must match exactly
 * (values, dtypes, shapes, chunking and the final ranking). On a mismatch it prints where
 * and what differs and exits with status 1; bad arguments or unreadable files exit with 2.
 * Plain Java: no JUnit, no Android.
 */
public final class GoldenCheck {
  private static final int MAX_REPORTED = 40;

  private final List<String> failures = new ArrayList<>();
  private int checks;

  public static void main(String[] args) {
    if (args.length != 2) {
      System.err.println("usage: GoldenCheck GOLDEN.json MANIFEST.json");
      System.exit(2);
    }
    GoldenCheck check = new GoldenCheck();
    try {
      check.run(Paths.get(args[0]), Paths.get(args[1]));
    } catch (IOException e) {
      System.err.println("cannot read input: " + e);
      System.exit(2);
    } catch (RuntimeException e) {
      check.fail("run", "unexpected " + e.getClass().getSimpleName() + ": " + e.getMessage());
      e.printStackTrace();
    }
    System.exit(check.report());
  }

  private int report() {
    if (failures.isEmpty()) {
      System.out.println("golden check passed: " + checks + " checks, every array identical");
      return 0;
    }
    System.out.println("golden check FAILED: " + failures.size() + " mismatch(es) in " + checks + " checks");
    for (int i = 0; i < Math.min(failures.size(), MAX_REPORTED); i++) {
      System.out.println("  " + failures.get(i));
    }
    if (failures.size() > MAX_REPORTED) {
      System.out.println("  ... and " + (failures.size() - MAX_REPORTED) + " more");
    }
    return 1;
  }

  private void fail(String where, String what) {
    failures.add(where + ": " + what);
  }

  private boolean expectEqual(String where, Object expected, Object actual) {
    checks++;
    if (expected == null ? actual == null : expected.equals(actual)) {
      return true;
    }
    fail(where, "expected " + show(expected) + ", got " + show(actual));
    return false;
  }

  private static String show(Object v) {
    if (v instanceof String) {
      return Json.write(v);
    }
    return String.valueOf(v);
  }

  // ------------------------------------------------------------------ the run

  private void run(Path goldenPath, Path manifestPath) throws IOException {
    byte[] manifestBytes = Files.readAllBytes(manifestPath);
    Map<String, Object> golden = Json.asObject(
        Json.parse(new String(Files.readAllBytes(goldenPath), StandardCharsets.UTF_8)), "golden");
    expectEqual("golden.format", "kdaliens-golden", golden.get("format"));
    expectEqual("golden.version", 1L, golden.get("version"));
    Object sha = golden.get("manifest_sha256");
    if (sha != null) {
      expectEqual("golden.manifest_sha256 (was the golden file written for this manifest?)", sha,
          sha256(manifestBytes));
    }
    BundleManifest manifest = BundleManifest.parse(new String(manifestBytes, StandardCharsets.UTF_8));

    checkHashes(Json.asArray(golden.get("stable_hash"), "stable_hash"));
    checkTokens(Json.asArray(golden.get("normalize_token"), "normalize_token"));
    checkFloats(Json.asArray(golden.get("to_float"), "to_float"));
    checkTimeGaps(Json.asArray(golden.get("time_gaps"), "time_gaps"), new FeatureEncoder(manifest.spec()));
    checkSampler(Json.asArray(golden.get("sampler"), "sampler"));
    List<Object> cases = Json.asArray(golden.get("cases"), "cases");
    if (cases.isEmpty()) {
      fail("cases", "the golden file holds no cases");
    }
    for (int c = 0; c < cases.size(); c++) {
      checkCase(Json.asObject(cases.get(c), "cases[" + c + "]"), manifest, "cases[" + c + "]");
    }
    checkErrorMessages();
  }

  private void checkHashes(List<Object> vectors) {
    for (int i = 0; i < vectors.size(); i++) {
      Map<String, Object> v = Json.asObject(vectors.get(i), "stable_hash[" + i + "]");
      String token = (String) v.get("token");
      expectEqual("stable_hash[" + i + "] " + show(token), v.get("hash"), Tokens.stableHash(token));
    }
  }

  private void checkTokens(List<Object> vectors) {
    for (int i = 0; i < vectors.size(); i++) {
      Map<String, Object> v = Json.asObject(vectors.get(i), "normalize_token[" + i + "]");
      String got;
      try {
        got = Tokens.normalizeToken(v.get("value"));
      } catch (EncoderException e) {
        got = "<error: " + e.getMessage() + ">";
      }
      expectEqual("normalize_token[" + i + "] of " + Tokens.describe(v.get("value")), v.get("token"), got);
    }
  }

  private void checkFloats(List<Object> vectors) {
    for (int i = 0; i < vectors.size(); i++) {
      Map<String, Object> v = Json.asObject(vectors.get(i), "to_float[" + i + "]");
      expectEqual("to_float[" + i + "] of " + Tokens.describe(v.get("value")), v.get("repr"),
          Tokens.floatRepr(Tokens.toFloat(v.get("value"))));
    }
  }

  private void checkTimeGaps(List<Object> vectors, FeatureEncoder enc) {
    for (int i = 0; i < vectors.size(); i++) {
      Map<String, Object> v = Json.asObject(vectors.get(i), "time_gaps[" + i + "]");
      double now = ((Number) v.get("now")).doubleValue();
      double ts = ((Number) v.get("ts")).doubleValue();
      expectEqual("time_gaps[" + i + "] now=" + now + " ts=" + ts, v.get("bucket"),
          enc.encodeTimeGaps(now, new double[] {ts})[0]);
    }
  }

  private void checkSampler(List<Object> vectors) {
    for (int i = 0; i < vectors.size(); i++) {
      Map<String, Object> v = Json.asObject(vectors.get(i), "sampler[" + i + "]");
      HistorySpec hs = new HistorySpec(toInt(v.get("short_len")), toInt(v.get("long_len")), seedBits(v.get("seed")));
      int[] got = new HistorySampler(hs).positions(toInt(v.get("n_past")));
      List<Object> gotList = new ArrayList<>();
      for (int p : got) {
        gotList.add((long) p);
      }
      String where = "sampler[" + i + "] " + hs + " n_past=" + v.get("n_past");
      checks++;
      if (!v.get("positions").equals(gotList)) {
        fail(where, "expected positions " + v.get("positions") + ", got " + gotList);
      }
    }
  }

  // ------------------------------------------------------------------ requests

  private void checkCase(Map<String, Object> c, BundleManifest fileManifest, String path) {
    String where = path + " '" + c.get("name") + "'";
    BundleManifest manifest = c.get("manifest") == null ? fileManifest : BundleManifest.fromJson(c.get("manifest"));
    RequestEncoder encoder = new RequestEncoder(manifest);
    MemoryCache cache = new MemoryCache(Json.asObject(c.get("catalogue"), where + ".catalogue"));
    List<Object> requests = Json.asArray(c.get("requests"), where + ".requests");
    for (int r = 0; r < requests.size(); r++) {
      Map<String, Object> req = Json.asObject(requests.get(r), where + ".requests[" + r + "]");
      String rwhere = where + " request '" + req.get("name") + "'";
      try {
        checkRequest(encoder, cache, req, rwhere);
      } catch (EncoderException e) {
        fail(rwhere, "the Java encoder raised: " + e.getMessage());
      }
    }
  }

  @SuppressWarnings("unchecked")
  private void checkRequest(RequestEncoder encoder, MemoryCache cache, Map<String, Object> req, String where) {
    Map<String, Object> expected = Json.asObject(req.get("expected"), where + ".expected");
    List<Map<String, ?>> events = new ArrayList<>();
    for (Object e : Json.asArray(req.get("events"), where + ".events")) {
      events.add((Map<String, ?>) e);
    }
    Object seed = req.get("seed");
    EncodedRequest got = encoder.encode((Map<String, ?>) req.get("user_features"),
        Json.asArray(req.get("candidates"), where + ".candidates"), events,
        ((Number) req.get("now")).doubleValue(), cache, seed == null ? null : seedBits(seed));

    expectEqual(where + " unique candidates", expected.get("unique_candidates"),
        new ArrayList<Object>(got.uniqueCandidates()));
    expectEqual(where + " n_history", expected.get("n_history"), (long) got.historyCount());

    List<Object> wantChunks = Json.asArray(expected.get("chunks"), where + ".chunks");
    List<List<InputTensor>> gotChunks = got.chunks();
    if (!expectEqual(where + " number of model calls", (long) wantChunks.size(), (long) gotChunks.size())) {
      return;
    }
    String idInput = "cand_" + encoder.manifest().spec().itemIdField();
    List<Double> scores = new ArrayList<>();
    for (int k = 0; k < wantChunks.size(); k++) {
      Map<String, Object> want = Json.asObject(wantChunks.get(k), where + ".chunks[" + k + "]");
      List<InputTensor> have = gotChunks.get(k);
      List<String> haveNames = new ArrayList<>();
      for (InputTensor t : have) {
        haveNames.add(t.name());
      }
      if (!expectEqual(where + " call " + k + " input names (in order)", new ArrayList<>(want.keySet()), haveNames)) {
        continue;
      }
      for (InputTensor t : have) {
        compareTensor(where + " call " + k + " input " + t.name(), Json.asObject(want.get(t.name()), t.name()), t);
        if (t.name().equals(idInput)) {
          for (int j = 0; j < t.numel(); j++) {
            long id = (long) t.valueAt(j);
            scores.add((double) (float) ((id * 37) % 11)); // FAKE_SCORE of kdaliens.jobs.golden
          }
        }
      }
    }
    double[] s = new double[scores.size()];
    for (int j = 0; j < s.length; j++) {
      s[j] = scores.get(j);
    }
    int[] order = got.rank(s);
    List<Object> candidates = Json.asArray(req.get("candidates"), where + ".candidates");
    List<Object> ranked = new ArrayList<>();
    List<Object> rankedScores = new ArrayList<>();
    for (int idx : order) {
      ranked.add(Tokens.normalizeToken(candidates.get(idx)));
      rankedScores.add(s[got.uniqueCandidates().indexOf(Tokens.normalizeToken(candidates.get(idx)))]);
    }
    expectEqual(where + " ranking", expected.get("ranked"), ranked);
    expectEqual(where + " ranked scores", expected.get("scores"), rankedScores);
  }

  private void compareTensor(String where, Map<String, Object> want, InputTensor t) {
    expectEqual(where + " dtype", want.get("dtype"), t.dtype().jsonName());
    List<Object> shape = new ArrayList<>();
    for (long d : t.shape()) {
      shape.add(d);
    }
    if (!expectEqual(where + " shape", want.get("shape"), shape)) {
      return;
    }
    List<Object> data = Json.asArray(want.get("data"), where + ".data");
    checks++;
    int bad = 0;
    for (int i = 0; i < data.size(); i++) {
      double expected = ((Number) data.get(i)).doubleValue();
      double actual = t.valueAt(i);
      if (expected != actual) {
        if (bad++ < 3) {
          fail(where, "element " + i + " " + position(t.shape(), i) + ": expected " + data.get(i) + ", got "
              + (t.dtype() == DType.FLOAT32 ? String.valueOf((float) actual) : String.valueOf((long) actual)));
        }
      }
    }
    if (bad > 3) {
      fail(where, (bad - 3) + " more element(s) differ");
    }
  }

  private static String position(long[] shape, int flat) {
    long[] idx = new long[shape.length];
    for (int k = shape.length - 1; k >= 0; k--) {
      idx[k] = flat % shape[k];
      flat /= (int) shape[k];
    }
    return Arrays.toString(idx);
  }

  // ------------------------------------------------------------------ error messages

  /** Bad input must fail with a message that names the place; these are Java-side checks. */
  private void checkErrorMessages() {
    expectError("truncated JSON", "line 2, column 5", () -> Json.parse("{\"a\":\n [1,"));
    expectError("JSON control character", "control character", () -> Json.parse("\"a\tb\""));
    expectError("manifest not an object", "not a JSON object", () -> BundleManifest.parse("[1, 2]"));
    expectError("manifest without keys", "missing key 'feature_spec'",
        () -> BundleManifest.parse("{\"format_version\": 1}"));
    Map<String, Object> spec = new LinkedHashMap<>();
    spec.put("user_fields", new ArrayList<>());
    List<Object> items = new ArrayList<>();
    Map<String, Object> f = new LinkedHashMap<>();
    f.put("kind", "multi");
    f.put("name", "genres");
    f.put("max_len", "three");
    f.put("vocab", Arrays.asList("a", "b"));
    items.add(f);
    spec.put("item_fields", items);
    expectError("bad max_len", "spec.item_fields[0] ('genres').max_len: expected an integer",
        () -> FeatureSpec.fromJson(spec, "spec"));
    f.put("max_len", 3L);
    expectError("no item id field", "must include the item id field 'item_id'",
        () -> FeatureSpec.fromJson(spec, "spec"));
    f.put("name", "item_id");
    f.put("hash_buckets", 10L);
    expectError("vocab and hash", "give exactly one of vocab or hash_buckets",
        () -> FeatureSpec.fromJson(spec, "spec"));
    f.remove("hash_buckets");
    FeatureEncoder enc = new FeatureEncoder(FeatureSpec.fromJson(spec, "spec"));
    Map<String, Object> row = new LinkedHashMap<>();
    row.put("item_id", Arrays.asList("a", Arrays.asList("nested")));
    expectError("nested list token", "items[0].item_id: cannot use a value of type list",
        () -> enc.encodeItems(Arrays.asList(row)));
    Map<String, Object> ev = new LinkedHashMap<>();
    ev.put("item_id", "a");
    ev.put("ts", "yesterday");
    expectError("event without ts", "events[0] has no usable 'ts'",
        () -> enc.encodeHistory(Arrays.asList(ev), 10.0, null, null));
  }

  private void expectError(String what, String fragment, Runnable action) {
    checks++;
    try {
      action.run();
      fail("error check '" + what + "'", "no exception; expected one mentioning " + show(fragment));
    } catch (EncoderException e) {
      if (!e.getMessage().contains(fragment)) {
        fail("error check '" + what + "'", "message " + show(e.getMessage()) + " lacks " + show(fragment));
      }
    }
  }

  // ------------------------------------------------------------------ helpers

  /** The golden catalogue as an item cache: {@code ItemCache.get_many} semantics. */
  private static final class MemoryCache implements ItemAttributes {
    private final Map<String, Object> items;

    MemoryCache(Map<String, Object> items) {
      this.items = items;
    }

    @Override
    @SuppressWarnings("unchecked")
    public Map<String, Map<String, Object>> getMany(List<?> ids) {
      Map<String, Map<String, Object>> out = new LinkedHashMap<>();
      for (Object id : ids) {
        String key = Tokens.normalizeToken(id);
        if (key == null) {
          throw new EncoderException("item_id is missing or empty: " + Tokens.describe(id));
        }
        if (items.containsKey(key) && !out.containsKey(key)) {
          Map<String, Object> attrs = new LinkedHashMap<>();
          attrs.put("item_id", key);
          attrs.putAll((Map<String, Object>) items.get(key));
          out.put(key, attrs);
        }
      }
      return out;
    }
  }

  private static int toInt(Object v) {
    return ((Number) v).intValue();
  }

  private static long seedBits(Object v) {
    return v instanceof BigInteger ? ((BigInteger) v).longValue() : ((Number) v).longValue();
  }

  private static String sha256(byte[] bytes) {
    try {
      byte[] d = MessageDigest.getInstance("SHA-256").digest(bytes);
      StringBuilder sb = new StringBuilder();
      for (byte b : d) {
        sb.append(String.format("%02x", b & 0xff));
      }
      return sb.toString();
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
