package dev.kdaliens.sample;

import android.content.ContentValues;
import android.content.Context;
import android.database.Cursor;
import android.database.sqlite.SQLiteDatabase;
import android.database.sqlite.SQLiteOpenHelper;
import dev.kdaliens.encoder.EncoderException;
import dev.kdaliens.encoder.ItemAttributes;
import dev.kdaliens.encoder.Json;
import dev.kdaliens.encoder.Tokens;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;

/**
 * The device's item cache and behaviour log, in one SQLite file, with the layout of the
 * Python SDK's {@code ItemCache} and {@code BehaviorLog} ({@code kdaliens/sdk/stores.py}):
 *
 * <ul>
 *   <li>{@code kdaliens_items(item_id, attrs, updated_at, seq)}: attributes as a JSON object
 *       keyed by canonical item id; {@code seq} is the upsert order, and past {@code maxItems}
 *       the least recently upserted items are evicted;
 *   <li>{@code kdaliens_events(id, user_id, item_id, event, ts)}: append-only, read oldest
 *       first ({@code ORDER BY ts, id}) through an index on {@code (user_id, ts)};
 *   <li>{@code kdaliens_meta}: the layout version ({@code schema_version = 1}).
 * </ul>
 *
 * <p>Ids go through {@link Tokens#normalizeToken}, so {@code 7}, {@code 7.0} and {@code "7"}
 * name the same item. The file is in WAL mode with {@code synchronous=FULL}: an appended event
 * is on disk when {@link #append} returns. Call it off the main thread.
 */
public final class DeviceStore extends SQLiteOpenHelper implements ItemAttributes {
  private static final String DB_NAME = "kdaliens.db";
  private static final int DB_VERSION = 2; // SQLiteOpenHelper's own version (PRAGMA user_version)
  private static final int SCHEMA_VERSION = 2; // the kdaliens layout, as in stores.py (2: events may have no kind)
  private static final int CHUNK = 900; // ids per IN (...) query, under SQLite's variable limit

  private final int maxItems;

  public DeviceStore(Context context, int maxItems) {
    super(context, DB_NAME, null, DB_VERSION);
    if (maxItems < 1) {
      throw new IllegalArgumentException("maxItems must be >= 1");
    }
    this.maxItems = maxItems;
    setWriteAheadLoggingEnabled(true);
  }

  @Override
  public void onConfigure(SQLiteDatabase db) {
    db.execSQL("PRAGMA synchronous = FULL");
  }

  @Override
  public void onCreate(SQLiteDatabase db) {
    db.execSQL("CREATE TABLE IF NOT EXISTS kdaliens_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    db.execSQL("CREATE TABLE IF NOT EXISTS kdaliens_items ("
        + " item_id TEXT PRIMARY KEY NOT NULL, attrs TEXT NOT NULL, updated_at REAL NOT NULL, seq INTEGER NOT NULL)");
    db.execSQL("CREATE UNIQUE INDEX IF NOT EXISTS kdaliens_items_seq ON kdaliens_items (seq)");
    db.execSQL("CREATE INDEX IF NOT EXISTS kdaliens_items_updated ON kdaliens_items (updated_at)");
    db.execSQL("CREATE TABLE IF NOT EXISTS kdaliens_events ("
        + " id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, item_id TEXT NOT NULL, event TEXT,"
        + " ts REAL NOT NULL)");
    db.execSQL("CREATE INDEX IF NOT EXISTS kdaliens_events_user_ts ON kdaliens_events (user_id, ts)");
    writeSchemaVersion(db);
  }

  private static void writeSchemaVersion(SQLiteDatabase db) {
    ContentValues v = new ContentValues();
    v.put("key", "schema_version");
    v.put("value", Integer.toString(SCHEMA_VERSION));
    db.insertWithOnConflict("kdaliens_meta", null, v, SQLiteDatabase.CONFLICT_REPLACE);
  }

  @Override
  public void onUpgrade(SQLiteDatabase db, int oldVersion, int newVersion) {
    if (oldVersion < 2) {
      // Events may have no kind (NULL): rebuilt with the same row ids (the append order), as stores.py does.
      db.execSQL("CREATE TABLE kdaliens_events_v2 ("
          + " id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, item_id TEXT NOT NULL, event TEXT, ts REAL NOT NULL)");
      db.execSQL("INSERT INTO kdaliens_events_v2 (id, user_id, item_id, event, ts)"
          + " SELECT id, user_id, item_id, event, ts FROM kdaliens_events");
      db.execSQL("DROP TABLE kdaliens_events");
      db.execSQL("ALTER TABLE kdaliens_events_v2 RENAME TO kdaliens_events");
      db.execSQL("CREATE INDEX IF NOT EXISTS kdaliens_events_user_ts ON kdaliens_events (user_id, ts)");
      writeSchemaVersion(db);
    }
  }

  // ------------------------------------------------------------------ item cache

  /**
   * Inserts or replaces items in one transaction (later ones count as more recent), then
   * evicts the least recently upserted items beyond {@code maxItems}.
   *
   * @param items maps with an {@code item_id} and attributes by name (JSON-like values)
   * @return the number of items written
   */
  public int upsert(List<? extends Map<String, ?>> items) {
    List<String[]> rows = new ArrayList<>(items.size());
    for (int i = 0; i < items.size(); i++) {
      Map<String, ?> item = items.get(i);
      if (item == null || !item.containsKey("item_id")) {
        throw new EncoderException("item #" + i + " has no 'item_id'");
      }
      String id = canonicalId(item.get("item_id"), "item #" + i + ": item_id");
      Map<String, Object> attrs = new LinkedHashMap<>();
      for (Map.Entry<String, ?> e : item.entrySet()) {
        if (!e.getKey().equals("item_id")) {
          requireFinite(e.getValue(), "item '" + id + "'." + e.getKey());
          attrs.put(e.getKey(), e.getValue());
        }
      }
      rows.add(new String[] {id, Json.write(attrs)});
    }
    if (rows.isEmpty()) {
      return 0;
    }
    double now = System.currentTimeMillis() / 1000.0;
    SQLiteDatabase db = getWritableDatabase();
    db.beginTransactionNonExclusive();
    try {
      long base;
      try (Cursor c = db.rawQuery("SELECT COALESCE(MAX(seq), 0) FROM kdaliens_items", null)) {
        c.moveToFirst();
        base = c.getLong(0);
      }
      for (int k = 0; k < rows.size(); k++) {
        // Delete first: a replaced id takes a new seq, and seq is unique.
        db.delete("kdaliens_items", "item_id = ?", new String[] {rows.get(k)[0]});
        ContentValues v = new ContentValues();
        v.put("item_id", rows.get(k)[0]);
        v.put("attrs", rows.get(k)[1]);
        v.put("updated_at", now);
        v.put("seq", base + k + 1);
        db.insertOrThrow("kdaliens_items", null, v);
      }
      db.execSQL("DELETE FROM kdaliens_items WHERE seq <= (SELECT seq FROM kdaliens_items ORDER BY seq DESC"
          + " LIMIT 1 OFFSET " + maxItems + ")");
      db.setTransactionSuccessful();
    } finally {
      db.endTransaction();
    }
    return rows.size();
  }

  /** Canonical id to attributes (with {@code item_id}) for the cached ids; absent ids are left out. */
  @Override
  public Map<String, Map<String, Object>> getMany(List<?> ids) {
    LinkedHashSet<String> keys = new LinkedHashSet<>();
    for (Object id : ids) {
      keys.add(canonicalId(id, "item_id"));
    }
    Map<String, String> found = new LinkedHashMap<>();
    List<String> all = new ArrayList<>(keys);
    SQLiteDatabase db = getReadableDatabase();
    for (int s = 0; s < all.size(); s += CHUNK) {
      List<String> chunk = all.subList(s, Math.min(all.size(), s + CHUNK));
      StringBuilder marks = new StringBuilder();
      for (int i = 0; i < chunk.size(); i++) {
        marks.append(i == 0 ? "?" : ",?");
      }
      try (Cursor c = db.rawQuery("SELECT item_id, attrs FROM kdaliens_items WHERE item_id IN (" + marks + ")",
          chunk.toArray(new String[0]))) {
        while (c.moveToNext()) {
          found.put(c.getString(0), c.getString(1));
        }
      }
    }
    Map<String, Map<String, Object>> out = new LinkedHashMap<>();
    for (String k : all) {
      String attrs = found.get(k);
      if (attrs != null) {
        Map<String, Object> item = new LinkedHashMap<>();
        item.put("item_id", k);
        item.putAll(Json.asObject(Json.parse(attrs), "kdaliens_items['" + k + "'].attrs"));
        out.put(k, item);
      }
    }
    return out;
  }

  /** Cached ids, most recently upserted first; at most {@code limit}. */
  public List<String> itemIds(int limit) {
    List<String> out = new ArrayList<>();
    try (Cursor c = getReadableDatabase().rawQuery(
        "SELECT item_id FROM kdaliens_items ORDER BY seq DESC LIMIT ?", new String[] {Integer.toString(limit)})) {
      while (c.moveToNext()) {
        out.add(c.getString(0));
      }
    }
    return out;
  }

  public long itemCount() {
    try (Cursor c = getReadableDatabase().rawQuery("SELECT COUNT(*) FROM kdaliens_items", null)) {
      c.moveToFirst();
      return c.getLong(0);
    }
  }

  // ------------------------------------------------------------------ behaviour log

  /**
   * Appends one event; it is committed (and synced) when this returns. A null {@code event}
   * stores no kind, which the encoder reads as the bundle's default kind.
   */
  public void append(Object userId, Object itemId, String event, double ts) {
    if (event != null && event.trim().isEmpty()) {
      throw new EncoderException("event must be a non-empty string, or null for no kind");
    }
    if (Double.isNaN(ts) || Double.isInfinite(ts)) {
      throw new EncoderException("ts must be finite, got " + ts);
    }
    ContentValues v = new ContentValues();
    v.put("user_id", canonicalId(userId, "user_id"));
    v.put("item_id", canonicalId(itemId, "item_id"));
    if (event == null) {
      v.putNull("event");
    } else {
      v.put("event", event);
    }
    v.put("ts", ts);
    getWritableDatabase().insertOrThrow("kdaliens_events", null, v);
  }

  /** A user's events before {@code before} (seconds), oldest first: {@code item_id}, {@code event}, {@code ts}. */
  public List<Map<String, Object>> events(Object userId, double before) {
    List<Map<String, Object>> out = new ArrayList<>();
    try (Cursor c = getReadableDatabase().rawQuery(
        "SELECT item_id, event, ts FROM kdaliens_events WHERE user_id = ? AND ts < ? ORDER BY ts, id",
        new String[] {canonicalId(userId, "user_id"), Double.toString(before)})) {
      while (c.moveToNext()) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("item_id", c.getString(0));
        e.put("event", c.isNull(1) ? null : c.getString(1));
        e.put("ts", c.getDouble(2));
        out.add(e);
      }
    }
    return out;
  }

  public long eventCount(Object userId) {
    try (Cursor c = getReadableDatabase().rawQuery("SELECT COUNT(*) FROM kdaliens_events WHERE user_id = ?",
        new String[] {canonicalId(userId, "user_id")})) {
      c.moveToFirst();
      return c.getLong(0);
    }
  }

  // ------------------------------------------------------------------ helpers

  private static String canonicalId(Object value, String what) {
    if (value instanceof Map || value instanceof List) {
      throw new EncoderException(what + " must be a string or a number, got " + Tokens.describe(value));
    }
    String id = Tokens.normalizeToken(value);
    if (id == null) {
      throw new EncoderException(what + " is missing or empty: " + Tokens.describe(value));
    }
    return id;
  }

  /** Strict JSON has no NaN or infinity: store a missing value as null instead. */
  private static void requireFinite(Object value, String what) {
    if (value instanceof Double || value instanceof Float) {
      double d = ((Number) value).doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d)) {
        throw new EncoderException(what + ": " + d + " cannot be stored as JSON; use null for a missing value");
      }
    } else if (value instanceof Map) {
      for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
        requireFinite(e.getValue(), what + "." + e.getKey());
      }
    } else if (value instanceof List) {
      List<?> l = (List<?>) value;
      for (int i = 0; i < l.size(); i++) {
        requireFinite(l.get(i), what + "[" + i + "]");
      }
    }
  }
}
