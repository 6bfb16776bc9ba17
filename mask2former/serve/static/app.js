// The page of mask2former serve: upload an image to v1/segment?overlay=1, show the overlay
// and a legend, highlight a segment on hover or click. Plain JavaScript, no libraries.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    file: null,
    record: null, // the answer of v1/segment (overlay_png taken out)
    idMap: null, // Int32Array, row-major: the segment shown at each pixel (0: none)
    pinned: 0, // the segment clicked (0: none); hovering shows others until the mouse leaves
    shown: -1,
    urls: [],
  };

  // -- COCO RLE (pycocotools' compressed string form), decoded in the browser --------------

  // The run lengths of an RLE: zeros first, alternating, column-major.
  function rleCounts(rle) {
    if (Array.isArray(rle.counts)) return rle.counts;
    const s = rle.counts;
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, c = 0, more = true;
      while (more) {
        c = s.charCodeAt(p) - 48;
        // Arithmetic rather than bit shifts: JavaScript shifts wrap at 32 bits.
        x += (c & 0x1f) * Math.pow(2, 5 * k);
        more = (c & 0x20) !== 0;
        p += 1;
        k += 1;
      }
      if (c & 0x10) x -= Math.pow(2, 5 * k); // sign bit of the last 5-bit group
      if (counts.length > 2) x += counts[counts.length - 2]; // stored as a difference
      counts.push(x);
    }
    return counts;
  }

  // Calls visit(rowMajorIndex) for every pixel of the mask.
  function forEachPixel(rle, visit) {
    const [h, w] = rle.size;
    const counts = rleCounts(rle);
    let pos = 0;
    for (let i = 0; i < counts.length; i++) {
      const end = pos + counts[i];
      if (i % 2 === 1) {
        for (let q = pos; q < end; q++) visit((q % h) * w + Math.floor(q / h));
      }
      pos = end;
    }
  }

  function decodeMask(rle) {
    const [h, w] = rle.size;
    const mask = new Uint8Array(h * w);
    forEachPixel(rle, (i) => { mask[i] = 1; });
    return mask;
  }

  // Which segment each pixel shows: painted last to first, so that where instance masks
  // overlap the first (best-scoring) one is on top, as in the overlay.
  function buildIdMap(record) {
    const map = new Int32Array(record.width * record.height);
    for (let k = record.segments.length - 1; k >= 0; k--) {
      const seg = record.segments[k];
      forEachPixel(seg.segmentation, (i) => { map[i] = seg.id; });
    }
    return map;
  }

  // -- highlighting -----------------------------------------------------------------------

  // Dims everything but segment `id` and outlines it in white; id 0 clears the canvas.
  function highlight(id) {
    if (id === state.shown) return;
    state.shown = id;
    const canvas = $("highlight");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const row of document.querySelectorAll("#legend tbody tr")) {
      row.classList.toggle("active", Number(row.dataset.id) === id);
      row.classList.toggle("pinned", Number(row.dataset.id) === state.pinned);
    }
    const seg = state.record && state.record.segments.find((s) => s.id === id);
    if (!seg) return;
    const w = canvas.width, h = canvas.height;
    const mask = decodeMask(seg.segmentation);
    const image = ctx.createImageData(w, h);
    const px = image.data;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) {
          px[4 * i + 3] = 150; // black at 60%: the rest of the picture steps back
        } else if (x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
                   !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w]) {
          px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = px[4 * i + 3] = 255;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  function segmentAt(event) {
    const canvas = $("highlight");
    const box = canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - box.left) * canvas.width) / box.width);
    const y = Math.floor(((event.clientY - box.top) * canvas.height) / box.height);
    if (!state.idMap || x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return 0;
    return state.idMap[y * canvas.width + x];
  }

  function pin(id) {
    state.pinned = state.pinned === id ? 0 : id;
    state.shown = -1;
    highlight(state.pinned || id);
  }

  // -- the request --------------------------------------------------------------------------

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(isError));
  }

  async function loadModel() {
    try {
      const response = await fetch("v1/model");
      const model = await response.json();
      $("model-info").textContent =
        `${model.model} (${model.backend}) · ${Object.keys(model.labels).length} classes`;
      for (const task of model.tasks) {
        const option = new Option(task, task, false, task === model.task);
        $("task").add(option);
      }
      $("threshold").value = model.threshold;
      showThreshold();
    } catch (err) {
      $("model-info").textContent = "model information unavailable";
    }
  }

  function showThreshold() {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    // The score threshold does not apply to semantic segmentation.
    $("threshold").disabled = $("task").value === "semantic";
  }

  function chooseFile(file) {
    if (!file) return;
    state.file = file;
    $("run").disabled = false;
    segment();
  }

  async function segment() {
    if (!state.file) return;
    const form = new FormData();
    form.append("image", state.file, state.file.name);
    form.append("task", $("task").value);
    if (!$("threshold").disabled) form.append("threshold", $("threshold").value);
    setStatus("segmenting…");
    $("run").disabled = true;
    const start = performance.now();
    try {
      const response = await fetch("v1/segment?overlay=1", { method: "POST", body: form });
      let body;
      try {
        body = await response.json();
      } catch (err) {
        body = { error: `${response.status} ${response.statusText}` };
      }
      if (!response.ok) {
        setStatus(`error ${response.status}: ${body.error || "request failed"}`, true);
        return;
      }
      show(body, performance.now() - start);
    } catch (err) {
      setStatus(`error: ${err.message} (is the server running?)`, true);
    } finally {
      $("run").disabled = false;
    }
  }

  function download(link, blob, name) {
    const url = URL.createObjectURL(blob);
    state.urls.push(url);
    link.href = url;
    link.download = name;
  }

  function base64Blob(data, type) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    return new Blob([bytes], { type });
  }

  function show(answer, ms) {
    const { overlay_png: png, overlay_colors: colors, ...record } = answer;
    state.record = record;
    state.pinned = 0;
    state.shown = -1;
    for (const url of state.urls) URL.revokeObjectURL(url);
    state.urls = [];
    const pngBlob = base64Blob(png, "image/png");
    const canvas = $("highlight");
    canvas.width = record.width;
    canvas.height = record.height;
    highlight(0);
    const image = $("overlay");
    image.src = URL.createObjectURL(pngBlob);
    state.urls.push(image.src);
    state.idMap = buildIdMap(record);
    fillLegend(record, colors);
    const stem = record.image.replace(/\.[^.]*$/, "") || "image";
    const json = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
    download($("download-json"), json, `${stem}.json`);
    download($("download-png"), pngBlob, `${stem}.overlay.png`);
    $("downloads").hidden = false;
    $("result").hidden = false;
    const n = record.segments.length;
    setStatus(`${n} segment${n === 1 ? "" : "s"} · ${record.task} · ` +
              `${record.width}×${record.height} · ${Math.round(ms)} ms`);
    document.body.dataset.done = String(Number(document.body.dataset.done || 0) + 1);
  }

  function fillLegend(record, colors) {
    const body = document.querySelector("#legend tbody");
    body.replaceChildren();
    for (const seg of record.segments) {
      const row = body.insertRow();
      row.dataset.id = seg.id;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colors[String(seg.id)] || "#888";
      row.insertCell().append(swatch);
      for (const text of [seg.id, seg.label, seg.score.toFixed(3), seg.area]) {
        row.insertCell().textContent = String(text);
      }
      row.addEventListener("mouseenter", () => highlight(seg.id));
      row.addEventListener("mouseleave", () => highlight(state.pinned));
      row.addEventListener("click", () => pin(seg.id));
    }
  }

  // -- wiring -------------------------------------------------------------------------------

  function init() {
    const drop = $("drop");
    $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (!e.dataTransfer.files.length) return;
      $("file").files = e.dataTransfer.files; // the input then names the dropped file
      chooseFile(e.dataTransfer.files[0]);
    });
    $("run").addEventListener("click", segment);
    $("task").addEventListener("change", showThreshold);
    $("threshold").addEventListener("input", showThreshold);
    const canvas = $("highlight");
    canvas.addEventListener("mousemove", (e) => highlight(segmentAt(e) || state.pinned));
    canvas.addEventListener("mouseleave", () => highlight(state.pinned));
    canvas.addEventListener("click", (e) => pin(segmentAt(e)));
    loadModel();
  }

  // For the browser test and the curious: the RLE decoder and the page's state.
  window.mask2former = { rleCounts, decodeMask, buildIdMap, highlight, state };
  init();
})();
