package dev.kdaliens.sample;

import android.app.Activity;
import android.content.Context;
import android.os.Bundle;
import android.util.Log;
import android.view.View;
import android.view.ViewGroup;
import android.widget.ArrayAdapter;
import android.widget.ListView;
import android.widget.TextView;
import dev.kdaliens.encoder.Json;
import dev.kdaliens.encoder.Tokens;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The sample: the items cached on the device, reranked on the device for the user's latest
 * behaviour. Tap an item: the tap is appended to the behaviour log and the list is reranked
 * with the bundle's model; the status line shows the latency.
 *
 * <p>On first start the bundle ({@code manifest.json} + {@code .pte}) is copied from the assets
 * into app storage and the item cache is seeded from {@code assets/catalogue.json}. All model
 * and database work runs on one background thread.
 */
public final class MainActivity extends Activity {
  private static final String TAG = "kdaliens";
  /** This sample has one user per device. */
  private static final String USER_ID = "device-user";
  private static final int MAX_ITEMS_CACHED = 10_000;
  private static final int MAX_ITEMS_SHOWN = 200;

  private final ExecutorService worker = Executors.newSingleThreadExecutor();
  private TextView status;
  private RowAdapter adapter;

  // Owned by the worker thread.
  private DeviceStore store;
  private OnDeviceRanker ranker;
  private Map<String, Object> userFeatures;
  private String tapEvent;

  @Override
  protected void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    setContentView(R.layout.activity_main);
    status = findViewById(R.id.status);
    ListView list = findViewById(R.id.items);
    adapter = new RowAdapter(this);
    list.setAdapter(adapter);
    list.setOnItemClickListener((parent, view, position, id) -> onTap(adapter.getItem(position)));
    worker.execute(this::start);
  }

  @Override
  protected void onDestroy() {
    worker.execute(() -> {
      if (ranker != null) {
        ranker.close();
      }
      if (store != null) {
        store.close();
      }
    });
    worker.shutdown();
    super.onDestroy();
  }

  // ------------------------------------------------------------------ worker thread

  private void start() {
    try {
      BundleAssets.Installed bundle = BundleAssets.install(this);
      Catalogue catalogue = Catalogue.load(this);
      store = new DeviceStore(this, MAX_ITEMS_CACHED);
      if (store.itemCount() == 0) {
        store.upsert(catalogue.items);
        for (Map<String, Object> e : catalogue.history) {
          Object kind = e.get("event"); // null: no kind (the bundle's default kind)
          store.append(USER_ID, e.get("item_id"), kind == null ? null : String.valueOf(kind), Tokens.toFloat(e.get("ts")));
        }
      }
      userFeatures = catalogue.user;
      tapEvent = catalogue.tapEvent != null ? catalogue.tapEvent : defaultTapEvent(bundle.manifest.spec().eventVocab());
      ranker = new OnDeviceRanker(bundle.manifest, bundle.modelFile);
      rerank("Ranked for you");
    } catch (BundleAssets.MissingBundleException e) {
      Log.e(TAG, "no bundle", e);
      showStatus(getString(R.string.no_bundle) + " (" + e.getMessage() + ")");
    } catch (Exception e) {
      Log.e(TAG, "start failed", e);
      showStatus("Could not start: " + e.getMessage());
    }
  }

  private void onTap(Row row) {
    if (row == null) {
      return;
    }
    worker.execute(() -> {
      if (ranker == null) {
        return;
      }
      try {
        store.append(USER_ID, row.itemId, tapEvent, now());
        rerank("After \"" + row.title + "\"");
      } catch (RuntimeException e) {
        Log.e(TAG, "rerank failed", e);
        showStatus("Rerank failed: " + e.getMessage());
      }
    });
  }

  private void rerank(String why) {
    List<String> ids = store.itemIds(MAX_ITEMS_SHOWN);
    double now = now();
    OnDeviceRanker.Result r = ranker.rerank(USER_ID, ids, userFeatures, store, now);
    Map<String, Map<String, Object>> attrs = store.getMany(ids);
    List<Row> rows = new ArrayList<>(r.order.length);
    for (int j = 0; j < r.order.length; j++) {
      String id = ids.get(r.order[j]);
      Map<String, Object> a = attrs.get(id);
      Object title = a == null ? null : a.get("title");
      rows.add(new Row(id, title == null ? "item " + id : String.valueOf(title), r.scores[j]));
    }
    String line = String.format(Locale.US,
        "%s \u00b7 %d items, %d events in the history \u00b7 encode %.2f ms, model %.2f ms (%d call%s)%s",
        why, rows.size(), r.historyCount, r.encodeMicros / 1000.0, r.modelMicros / 1000.0, r.modelCalls,
        r.modelCalls == 1 ? "" : "s", r.fallback ? " \u00b7 model failed, list unranked: " + r.error : "");
    runOnUiThread(() -> {
      adapter.setRows(rows);
      status.setText(line);
    });
  }

  private void showStatus(String text) {
    runOnUiThread(() -> status.setText(text));
  }

  private static double now() {
    return System.currentTimeMillis() / 1000.0;
  }

  /** The event a tap logs: "click" when the model knows it, else its last event kind (MovieLens: rating 5). */
  static String defaultTapEvent(List<String> eventVocab) {
    if (eventVocab.isEmpty() || eventVocab.contains("click")) {
      return "click";
    }
    return eventVocab.get(eventVocab.size() - 1);
  }

  // ------------------------------------------------------------------ catalogue asset

  /**
   * {@code assets/catalogue.json}: {@code {"items": [{"item_id": ..., "title": ..., <attributes>}],
   * "user": {<user attributes>}, "history": [{"item_id", "event", "ts"}], "tap_event": "..."}};
   * only {@code items} is required.
   */
  static final class Catalogue {
    List<Map<String, Object>> items = new ArrayList<>();
    List<Map<String, Object>> history = new ArrayList<>();
    Map<String, Object> user;
    String tapEvent;

    static Catalogue load(Context context) throws java.io.IOException {
      Catalogue c = new Catalogue();
      String text = BundleAssets.readTextAsset(context, "catalogue.json");
      if (text == null) {
        throw new BundleAssets.MissingBundleException("assets/catalogue.json is missing");
      }
      Map<String, Object> doc = Json.asObject(Json.parse(text), "catalogue.json");
      for (Object item : Json.asArray(Json.require(doc, "items", "catalogue.json"), "catalogue.json.items")) {
        c.items.add(Json.asObject(item, "catalogue.json.items[]"));
      }
      if (doc.get("history") != null) {
        for (Object e : Json.asArray(doc.get("history"), "catalogue.json.history")) {
          c.history.add(Json.asObject(e, "catalogue.json.history[]"));
        }
      }
      c.user = doc.get("user") == null ? Collections.<String, Object>emptyMap()
          : Json.asObject(doc.get("user"), "catalogue.json.user");
      c.tapEvent = doc.get("tap_event") == null ? null : Json.asString(doc.get("tap_event"), "catalogue.json.tap_event");
      return c;
    }
  }

  // ------------------------------------------------------------------ list

  static final class Row {
    final String itemId;
    final String title;
    final double score;

    Row(String itemId, String title, double score) {
      this.itemId = itemId;
      this.title = title;
      this.score = score;
    }
  }

  private static final class RowAdapter extends ArrayAdapter<Row> {
    RowAdapter(Context context) {
      super(context, android.R.layout.simple_list_item_2, android.R.id.text1);
    }

    void setRows(List<Row> rows) {
      setNotifyOnChange(false);
      clear();
      addAll(rows);
      notifyDataSetChanged();
    }

    @Override
    public View getView(int position, View convertView, ViewGroup parent) {
      View v = super.getView(position, convertView, parent);
      Row row = getItem(position);
      ((TextView) v.findViewById(android.R.id.text1)).setText(row.title);
      ((TextView) v.findViewById(android.R.id.text2)).setText(Double.isNaN(row.score)
          ? "id " + row.itemId
          : String.format(Locale.US, "id %s \u00b7 score %.3f", row.itemId, row.score));
      return v;
    }
  }
}
