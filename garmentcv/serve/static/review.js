// GarmentCV review app. Every file name, label and message from the server or the user's files is put in the
// page with textContent or as an attribute value, never parsed as HTML.
"use strict";

(() => {
  const TOKEN = document.querySelector('meta[name="gcv-review-token"]').content;
  const PAGE = 200; // photos rendered at once; "Show more" adds as many again
  const $ = (id) => document.getElementById(id);

  const state = {
    items: [], // {key, path, label, given, confidence, needs_review, unknown, error, image, extra, thumb}
    classes: [],
    decisions: new Map(), // key -> {action: "accept" | "relabel" | "drop", label}
    visible: [], // keys shown, in order
    shown: PAGE,
    current: 0, // index into visible
    folder: "",
    objectUrls: [],
  };

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function say(message, isError = false) {
    const status = $("status");
    status.textContent = message;
    status.classList.toggle("error", isError);
  }

  async function api(url, options = {}) {
    const init = { ...options, headers: { ...(options.headers || {}) }, credentials: "same-origin" };
    if ((init.method || "GET") !== "GET") init.headers["X-GarmentCV-Review"] = TOKEN;
    const response = await fetch(url, init);
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return response;
  }

  // ---- sources -------------------------------------------------------------------------------------------------

  async function loadModels() {
    const { models, root } = await (await api("api/models")).json();
    const select = $("model");
    for (const name of models) select.append(el("option", { value: name, text: name }));
    if (models.length) {
      select.value = models[0];
      await chooseModel();
    }
    $("browser").hidden = !root;
    if (root) await browse("");
  }

  async function chooseModel() {
    const name = $("model").value;
    $("model-note").textContent = "";
    if (!name) return;
    try {
      const info = await (await api("api/models/" + encodeURIComponent(name))).json();
      $("model-note").textContent = `${info.arch}, ${info.precision}, ${info.classes.length} classes`;
      if (!state.items.length) setClasses(info.classes);
    } catch (error) {
      say(`Model ${name}: ${error.message}`, true);
    }
  }

  function needModel() {
    const name = $("model").value;
    if (!name) say("Choose a model first.", true);
    return name;
  }

  async function classifyFiles(files) {
    const images = [...files].filter((f) => f.type.startsWith("image/") || /\.[a-z0-9]+$/i.test(f.name));
    const model = needModel();
    if (!model || !images.length) return;
    const form = new FormData();
    form.append("model", model);
    for (const file of images) form.append("files", file, file.name);
    form.append("names", JSON.stringify(images.map((f) => f.name))); // multipart file names lose some characters
    say(`Classifying ${images.length} photo(s)…`);
    try {
      const result = await (await api("api/classify/upload", { method: "POST", body: form })).json();
      for (const url of state.objectUrls) URL.revokeObjectURL(url);
      state.objectUrls = images.map((f) => URL.createObjectURL(f));
      load(result, (item, i) => state.objectUrls[i]);
      say(`Classified ${result.items.length} uploaded photo(s); paths in the corrections file are their file names.`);
    } catch (error) {
      say(`Upload: ${error.message}`, true);
    }
  }

  async function browse(path) {
    try {
      const listing = await (await api("api/folders?path=" + encodeURIComponent(path))).json();
      state.folder = listing.path;
      const crumbs = $("crumbs");
      crumbs.replaceChildren();
      const parts = listing.path ? listing.path.split("/") : [];
      const crumb = (label, target) => {
        const button = el("button", { type: "button", class: "link", text: label });
        button.addEventListener("click", () => browse(target));
        crumbs.append(el("li", {}, button));
      };
      crumb("root", "");
      parts.forEach((part, i) => crumb(part, parts.slice(0, i + 1).join("/")));
      const folders = $("folders");
      folders.replaceChildren();
      for (const name of listing.folders) {
        const target = listing.path ? `${listing.path}/${name}` : name;
        const button = el("button", { type: "button", class: "link", text: name + "/",
                                      "aria-label": `Open folder ${name}` });
        button.addEventListener("click", () => browse(target));
        folders.append(el("li", {}, button));
      }
      $("folder-count").textContent = `${listing.images} photo(s) in ${listing.path || "the root"}.`;
      const rows = $("rows-files");
      rows.replaceChildren();
      for (const name of listing.rows_files) {
        const target = listing.path ? `${listing.path}/${name}` : name;
        const button = el("button", { type: "button", class: "link", text: name, "aria-label": `Open rows file ${name}` });
        button.addEventListener("click", () => openRows(target));
        rows.append(el("li", {}, button));
      }
      if (!listing.rows_files.length) rows.append(el("li", { class: "note", text: "none" }));
    } catch (error) {
      say(`Folder ${path || "root"}: ${error.message}`, true);
    }
  }

  async function classifyFolder() {
    const model = needModel();
    if (!model) return;
    say(`Classifying ${state.folder || "the root"}…`);
    try {
      const body = JSON.stringify({ model, path: state.folder, recursive: $("recursive").checked });
      const result = await (await api("api/classify/folder", {
        method: "POST", body, headers: { "Content-Type": "application/json" } })).json();
      load(result, thumbnailUrl);
      say(`Classified ${result.items.length} photo(s) of ${state.folder || "the root"}; paths are relative to it.`);
    } catch (error) {
      say(`Classify: ${error.message}`, true);
    }
  }

  async function openRows(path) {
    try {
      const result = await (await api("api/rows?path=" + encodeURIComponent(path))).json();
      load(result, thumbnailUrl);
      say(`Opened ${path}: ${result.items.length} row(s)${result.truncated ? " (the first ones only)" : ""}.`);
    } catch (error) {
      say(`Rows file ${path}: ${error.message}`, true);
    }
  }

  async function uploadRows(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    if (state.folder) form.append("images", state.folder);
    try {
      const result = await (await api("api/rows/upload", { method: "POST", body: form })).json();
      load(result, thumbnailUrl);
      say(`Opened ${file.name}: ${result.items.length} row(s).`);
    } catch (error) {
      say(`Rows file ${file.name}: ${error.message}`, true);
    }
  }

  function thumbnailUrl(item) {
    return item.image ? "api/thumbnail?path=" + encodeURIComponent(item.image) : null;
  }

  // ---- review --------------------------------------------------------------------------------------------------

  function setClasses(classes) {
    state.classes = classes;
    const keys = $("keys");
    keys.replaceChildren();
    if (!classes.length) return;
    keys.append("Relabel keys: ");
    classes.slice(0, 9).forEach((name, i) => {
      keys.append(el("kbd", { text: String(i + 1) }), " ", el("span", { class: "class-name", text: name }), "  ");
    });
  }

  function load(result, thumb) {
    state.items = result.items.map((item, i) => ({ ...item, key: i, thumb: thumb(item, i) }));
    state.decisions = new Map();
    state.current = 0;
    state.shown = PAGE;
    setClasses(result.classes || []);
    $("source").textContent = result.source ? `(${result.source})` : "";
    const anyUnknown = state.items.some((i) => i.unknown !== null && i.unknown !== undefined);
    $("filter").querySelector('option[value="unknown"]').hidden = !anyUnknown;
    render(true);
  }

  function needsReview(item) {
    const threshold = parseFloat($("threshold").value);
    if (item.error) return true;
    if (!Number.isNaN(threshold)) return item.confidence !== null && item.confidence < threshold;
    return item.needs_review === true;
  }

  function shownItems() {
    const filter = $("filter").value;
    return state.items.filter((item) => {
      if (filter === "review") return needsReview(item);
      if (filter === "unknown") return item.unknown === true;
      if (filter === "undecided") return !state.decisions.has(item.key);
      return true;
    });
  }

  function decisionText(decision) {
    if (!decision) return "";
    if (decision.action === "drop") return "dropped";
    return `${decision.action === "accept" ? "accepted" : "relabelled"}: ${decision.label}`;
  }

  function card(item, index) {
    const decision = state.decisions.get(item.key);
    const li = el("li", { class: "item", tabindex: index === state.current ? "0" : "-1", "data-key": String(item.key) });
    const label = item.error ? "not classified" : item.label;
    const confidence = item.confidence === null || item.confidence === undefined ? "" : item.confidence.toFixed(3);
    const flags = [];
    if (needsReview(item)) flags.push("needs review");
    if (item.unknown) flags.push("unknown");
    li.setAttribute("aria-label", [item.path, label, confidence && `confidence ${confidence}`, ...flags,
                                   decisionText(decision)].filter(Boolean).join(", "));
    if (item.thumb) li.append(el("img", { src: item.thumb, alt: "", loading: "lazy" }));
    else li.append(el("div", { class: "no-image", text: "no preview" }));
    li.append(el("div", { class: "path", text: item.path, title: item.path }));
    const line = el("div", { class: "label" }, el("strong", { text: label || "" }));
    if (confidence) line.append(" ", el("span", { class: "confidence", text: confidence }));
    li.append(line);
    if (item.given && item.given !== item.label) li.append(el("div", { class: "given", text: `given: ${item.given}` }));
    if (item.error) li.append(el("div", { class: "error-text", text: item.error }));
    const flagBox = el("div", { class: "flags" });
    for (const flag of flags) flagBox.append(el("span", { class: "flag", text: flag }));
    for (const [name, value] of Object.entries(item.extra || {})) {
      flagBox.append(el("span", { class: "extra", text: `${name}: ${value}` }));
    }
    li.append(flagBox);
    const actions = el("div", { class: "actions" });
    const accept = el("button", { type: "button", text: "Accept", "aria-label": `Accept ${label || ""} for ${item.path}` });
    accept.addEventListener("click", () => { select(index); decide("accept"); });
    if (item.error) accept.disabled = true;
    const relabel = el("select", { "aria-label": `Relabel ${item.path}` });
    relabel.append(el("option", { value: "", text: "relabel…" }));
    state.classes.forEach((name) => relabel.append(el("option", { value: name, text: name })));
    if (decision && decision.action === "relabel") relabel.value = decision.label;
    relabel.addEventListener("change", () => {
      if (relabel.value) { select(index); decide("relabel", relabel.value); }
    });
    const drop = el("button", { type: "button", text: "Drop", "aria-label": `Drop ${item.path}` });
    drop.addEventListener("click", () => { select(index); decide("drop"); });
    actions.append(accept, relabel, drop);
    li.append(actions);
    li.append(el("div", { class: "decision", text: decisionText(decision) }));
    if (decision) li.classList.add("decided", `is-${decision.action}`);
    if (flags.length) li.classList.add("flagged");
    li.addEventListener("click", (event) => {
      if (!event.target.closest("button, select")) select(index);
    });
    return li;
  }

  function render(resetFocus = false) {
    const items = shownItems();
    state.visible = items.map((i) => i.key);
    if (resetFocus || state.current >= items.length) state.current = Math.max(0, Math.min(state.current, items.length - 1));
    const list = $("items");
    const focused = list.contains(document.activeElement);
    list.replaceChildren(...items.slice(0, state.shown).map(card));
    $("more").hidden = items.length <= state.shown;
    const decided = state.decisions.size;
    $("counts").textContent = `${state.items.length} photo(s), ${items.length} shown, ${decided} decided`;
    if (focused) focusCurrent();
  }

  function focusCurrent() {
    const node = $("items").children[state.current];
    if (!node) return;
    for (const li of $("items").children) li.setAttribute("tabindex", "-1");
    node.setAttribute("tabindex", "0");
    node.focus();
    node.scrollIntoView({ block: "nearest" });
  }

  function select(index) {
    if (index < 0 || index >= state.visible.length) return;
    if (index >= state.shown) {
      state.shown = index + 1;
      render();
    }
    state.current = index;
    focusCurrent();
  }

  function currentItem() {
    const key = state.visible[state.current];
    return key === undefined ? null : state.items[key];
  }

  function decide(action, label) {
    const item = currentItem();
    if (!item) return;
    if (action === "accept") {
      if (item.error || !item.label) {
        say(`${item.path} has no label to accept; relabel or drop it.`, true);
        return;
      }
      label = item.label;
    }
    if (action === null) state.decisions.delete(item.key);
    else state.decisions.set(item.key, { action, label: label || "" });
    const before = state.visible.slice();
    const at = state.current;
    render();
    // the next photo: the one after this in the list as it was (a filter may have hidden this one)
    const wanted = action === null ? before.slice(at) : before.slice(at + 1);
    const next = wanted.map((key) => state.visible.indexOf(key)).find((i) => i >= 0);
    select(next !== undefined ? next : Math.max(0, state.visible.length - 1));
  }

  async function exportCorrections() {
    const byPath = new Map();
    for (const item of state.items) {
      const decision = state.decisions.get(item.key);
      if (!decision) continue;
      const action = decision.action === "drop" ? "drop" : "relabel";
      byPath.set(item.path, { path: item.path, action, label: action === "relabel" ? decision.label : "" });
    }
    if (!byPath.size) {
      say("No decisions yet: accept, relabel or drop some photos first.", true);
      return;
    }
    try {
      const response = await api("api/export", { method: "POST", headers: { "Content-Type": "application/json" },
                                                 body: JSON.stringify({ decisions: [...byPath.values()] }) });
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: "corrections.csv" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      say(`Exported ${byPath.size} correction(s) to corrections.csv.`);
    } catch (error) {
      say(`Export: ${error.message}`, true);
    }
  }

  // ---- keyboard ------------------------------------------------------------------------------------------------

  function toggleHelp() {
    const help = $("help");
    if (help.open) help.close();
    else help.showModal();
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if ($("help").open) {
      if (event.key === "?") { event.preventDefault(); toggleHelp(); }
      return;
    }
    const target = event.target;
    if (target.closest && target.closest("input, select, textarea")) return;
    const key = event.key;
    let handled = true;
    if (key === "?") toggleHelp();
    else if (key === "j" || key === "ArrowDown" || key === "ArrowRight") select(state.current + 1);
    else if (key === "k" || key === "ArrowUp" || key === "ArrowLeft") select(state.current - 1);
    else if (key === "a") decide("accept");
    else if (key === "x") decide("drop");
    else if (key === "u") decide(null);
    else if (/^[1-9]$/.test(key)) {
      const name = state.classes[Number(key) - 1];
      if (name) decide("relabel", name);
      else say(`No class ${key}: the classes are numbered 1–${Math.min(9, state.classes.length)}.`, true);
    } else handled = false;
    if (handled) event.preventDefault();
  }

  // ---- wiring --------------------------------------------------------------------------------------------------

  document.addEventListener("keydown", onKey);
  $("items").addEventListener("focusin", (event) => { // Tab or a click moves the current photo too
    const li = event.target.closest("li.item");
    const index = li ? [...$("items").children].indexOf(li) : -1;
    if (index >= 0 && index !== state.current) {
      state.current = index;
      for (const node of $("items").children) node.setAttribute("tabindex", node === li ? "0" : "-1");
    }
  });
  $("help-button").addEventListener("click", toggleHelp);
  $("help-close").addEventListener("click", () => $("help").close());
  $("model").addEventListener("change", chooseModel);
  $("filter").addEventListener("change", () => render(true));
  $("threshold").addEventListener("input", () => render(true));
  $("more").addEventListener("click", () => { state.shown += PAGE; render(); });
  $("export").addEventListener("click", exportCorrections);
  $("classify-folder").addEventListener("click", classifyFolder);
  $("rows-upload").addEventListener("change", (event) => {
    if (event.target.files.length) uploadRows(event.target.files[0]);
  });
  const drop = $("drop");
  const files = $("files");
  drop.addEventListener("click", () => files.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); files.click(); }
  });
  files.addEventListener("change", () => classifyFiles(files.files));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classifyFiles(event.dataTransfer.files);
  });
  loadModels().catch((error) => say(`Models: ${error.message}`, true));
})();
