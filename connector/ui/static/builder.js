/* The flow builder (/ui/flows/new, /ui/flows/<name>/edit).
 *
 * One model, two views: the page edits the flow's definition (the object the YAML file,
 * GET /api/v1/flows/<name> and the export hold) in place and saves it whole with
 * POST /api/v1/flows or PUT /api/v1/flows/<name>. Keys it has no editor for (on_failure,
 * concurrency, anything a later version adds) are kept as they are; a value is converted
 * only when someone edits it, so a flow opened and saved unchanged is saved unchanged.
 *
 * Samples: the trigger's (tested, else the catalog's) and each step's (its test output,
 * else the catalog's sample) feed the field picker, which inserts {{ trigger.x }} or
 * {{ steps.name.y }} at the cursor, and the context a step test renders its inputs with.
 * Errors from the API (422 details such as steps[0].inputs.phone) are shown beside the
 * element whose data-error-for names that place (window.connector.showErrors).
 */
(function () {
  "use strict";

  var C = window.connector;
  var TEMPLATE = /\{\{|\{%/;
  var NUMERIC = {Integer: true, Float: true, Decimal: true, Number: true};
  var JSONISH = {Dict: true, Nested: true, List: true, Tuple: true};
  var IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

  var data, def, form;
  var triggers = {}, actions = {}, searches = {}, apps = {};
  var connections = [];
  var ops = {}, opList = [];
  var samples = {trigger: null, steps: {}};  // steps: name -> {output, source}
  var ui = new WeakMap();  // model object -> {modes: {field: "text"|"list"}, test: node}
  var invalid = {};  // place -> message (client-side: JSON that does not parse)
  var optionCache = {};
  var saved = false, flowName = "", enabled = false, dirty = false, nextId = 0;

  // -- small helpers -----------------------------------------------------------------------

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) {
        return;
      }
      if (key === "class") {
        el.className = value;
      } else if (key === "text") {
        el.textContent = value;
      } else if (key === "for") {
        el.htmlFor = value;
      } else if (key === "value") {
        el.value = value;
      } else if (value === true) {
        el.setAttribute(key, "");
      } else {
        el.setAttribute(key, String(value));
      }
    });
    [].concat(children || []).forEach(function (child) {
      if (child === null || child === undefined || child === false) {
        return;
      }
      el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return el;
  }

  function uid(prefix) {
    nextId += 1;
    return (prefix || "b") + "-" + nextId;
  }

  function clone(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  function stateOf(obj) {
    var st = ui.get(obj);
    if (!st) {
      st = {modes: {}};
      ui.set(obj, st);
    }
    return st;
  }

  function hasTemplate(value) {
    return typeof value === "string" && TEMPLATE.test(value);
  }

  function isObject(value) {
    return value !== null && typeof value === "object";
  }

  function markDirty() {
    var box = document.getElementById("flash");
    if (box && !box.hidden && /\berror\b/.test(box.className)) {
      box.hidden = true;  // it was about the last save; this edit may be the fix
    }
    dirty = true;
    document.getElementById("b-dirty").textContent = "Unsaved changes";
  }

  function markClean() {
    dirty = false;
    document.getElementById("b-dirty").textContent = "";
  }

  function inputsOf(owner) {
    if (!isObject(owner.inputs) || Array.isArray(owner.inputs)) {
      owner.inputs = {};
    }
    return owner.inputs;
  }

  function appLabel(key) {
    return apps[key] ? apps[key].label : key;
  }

  /* An error slot (<p class="field-error" data-error-for="place">) with its id. */
  function slot(place, id) {
    return h("p", {"class": "field-error", id: id, "data-error-for": place});
  }

  function field(labelText, control, opts) {
    opts = opts || {};
    var id = control.id || (control.id = uid("bf"));
    var errId = id + "-error";
    var helpId = opts.help ? id + "-help" : null;
    control.setAttribute("aria-describedby", [helpId, errId].filter(Boolean).join(" "));
    var label = h("label", {"for": id}, [labelText, opts.required ?
      h("span", {"class": "req", "aria-hidden": "true", text: " *"}) : null]);
    var row = opts.extra && opts.extra.length ?
      h("div", {"class": "input-row"}, [control].concat(opts.extra)) : control;
    return h("div", {"class": "field" + (opts.cls ? " " + opts.cls : "")}, [
      label, row,
      opts.help ? h("p", {"class": "help", id: helpId}, opts.help) : null,
      slot(opts.place, errId)]);
  }

  // -- the catalog -------------------------------------------------------------------------

  function indexCatalog() {
    data.apps.forEach(function (app) {
      apps[app.key] = app;
      app.triggers.forEach(function (t) { triggers[t.key] = t; });
      app.actions.forEach(function (a) { actions[a.key] = a; });
      app.searches.forEach(function (s) { actions[s.key] = s; searches[s.key] = s; });
    });
    data.ops.forEach(function (o) { ops[o.op] = o; opList.push(o); });
    connections = data.connections.slice();
  }

  /* A <select> of components grouped by app (<optgroup>), with a first empty choice. */
  function componentSelect(kinds, current, placeholder) {
    var select = h("select", {}, [h("option", {value: "", text: placeholder})]);
    var known = false;
    data.apps.forEach(function (app) {
      var items = [];
      kinds.forEach(function (kind) { items = items.concat(app[kind]); });
      if (!items.length) {
        return;
      }
      var group = h("optgroup", {label: app.label});
      items.forEach(function (c) {
        var opt = h("option", {value: c.key, text: c.label + (c.kind === "search" ? " (search)" : "")});
        if (c.key === current) {
          opt.selected = true;
          known = true;
        }
        group.appendChild(opt);
      });
      select.appendChild(group);
    });
    if (current && !known) {
      select.appendChild(h("option", {value: current, selected: true,
                                      text: current + " (not installed)"}));
    }
    return select;
  }

  function usesConnection(component) {
    if (!component) {
      return false;
    }
    if (component.any_connection) {
      return true;
    }
    var app = apps[component.app];
    return Boolean(app && app.credentials.length && component.needs_connection !== false);
  }

  function connectionsFor(component) {
    return connections.filter(function (c) {
      return component.any_connection || c.app === component.app;
    });
  }

  /* Choose the only connection there is for a newly chosen trigger or action. */
  function autoConnection(owner, component) {
    if (!usesConnection(component) || component.any_connection || owner.connection) {
      return;
    }
    var mine = connectionsFor(component);
    if (mine.length === 1) {
      owner.connection = mine[0].name;
    }
  }

  function refreshConnections(button) {
    var all = [];
    function page(n) {
      return C.api("GET", "/connections?limit=100&page=" + n).then(function (answer) {
        all = all.concat(answer.data.map(function (c) { return {name: c.name, app: c.app}; }));
        return n < answer.pagination.pages ? page(n + 1) : all;
      });
    }
    C.busy(button, page(1)).then(function (list) {
      connections = list;
      renderAll();
      C.flash("Connections refreshed: " + list.length + " in all.", "ok", true);
    }, function (err) {
      C.flash("Could not list the connections: " + err.message, "error", true);
    });
  }

  function connectionField(owner, component, place) {
    var optional = Boolean(component.any_connection);
    var select = h("select", {}, [h("option", {value: "", text: optional ?
      "(none)" : "Choose a connection…"})]);
    var mine = connectionsFor(component);
    var found = false;
    mine.forEach(function (c) {
      var opt = h("option", {value: c.name, text: component.any_connection ?
        c.name + " (" + appLabel(c.app) + ")" : c.name});
      if (c.name === owner.connection) {
        opt.selected = true;
        found = true;
      }
      select.appendChild(opt);
    });
    if (owner.connection && !found) {
      select.appendChild(h("option", {value: owner.connection, selected: true,
                                      text: owner.connection + " (not found)"}));
    }
    select.setAttribute("data-connection-for", place);
    select.addEventListener("change", function () {
      if (select.value) {
        owner.connection = select.value;
      } else {
        delete owner.connection;
      }
      markDirty();
      renderAll();  // dropdowns filled by a search use the connection
    });
    var refresh = h("button", {type: "button", "class": "small", title: "Refresh the list",
                               "aria-label": "Refresh the connections", text: "↻"});
    refresh.addEventListener("click", function () { refreshConnections(refresh); });
    var link = h("a", {href: form.getAttribute("data-connections-url") + "#add-heading",
                       target: "_blank", rel: "noopener", text: "Add a connection"});
    var help = h("span", {}, [
      component.any_connection ? "Optional: any connection's credentials and base URL. " :
        "Only " + appLabel(component.app) + " connections" +
        (mine.length ? ". " : ": there is none yet. "),
      link, " (opens a new tab), then ↻."]);
    return field("Connection", select, {required: !optional, help: help,
                                         place: place + ".connection", extra: [refresh]});
  }

  // -- inputs ------------------------------------------------------------------------------

  /* How an input is edited: "json" (objects), "choice" (fixed choices or yes/no),
   * "options" (a dropdown filled by a search) or "text"; mode "text" overrides the lists. */
  function widgetKind(f, value, mode) {
    if (isObject(value) || (value === undefined && JSONISH[f.type])) {
      return "json";
    }
    var listed = f.choices_from ? "options" :
      (f.choices || f.type === "Boolean") ? "choice" : null;
    if (!listed) {
      return "text";
    }
    if (mode === "text" || mode === "list") {
      return mode === "list" ? listed : "text";
    }
    if (value === undefined || value === null) {
      return listed;
    }
    if (listed === "choice") {
      return choicesOf(f).some(function (c) { return c === value || String(c) === String(value); }) ?
        "choice" : "text";
    }
    return hasTemplate(value) ? "text" : "options";
  }

  function choicesOf(f) {
    return f.choices || (f.type === "Boolean" ? [true, false] : []);
  }

  function display(value) {
    if (value === undefined || value === null) {
      return "";
    }
    return typeof value === "string" ? value : String(value);
  }

  /* Turn what was typed into the input's value: numbers and yes/no where the field takes
   * them and nothing else is typed; a template stays text. */
  function parseTyped(text, f) {
    if (text === "") {
      return undefined;
    }
    if (hasTemplate(text)) {
      return text;
    }
    if (f && NUMERIC[f.type] && /^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$/.test(text)) {
      return Number(text);
    }
    if (f && f.type === "Boolean" && /^(true|false)$/.test(text.trim())) {
      return text.trim() === "true";
    }
    return text;
  }

  function setInput(owner, name, value) {
    var inputs = inputsOf(owner);
    if (value === undefined) {
      delete inputs[name];
    } else {
      inputs[name] = value;
    }
    markDirty();
  }

  function renderInputs(component, owner, place, scope) {
    var box = h("div", {"class": "inputs"});
    var values = isObject(owner.inputs) ? owner.inputs : {};
    if (!component) {
      box.appendChild(jsonWhole(owner, place));
      return box;
    }
    if (!component.inputs.length) {
      box.appendChild(h("p", {"class": "muted small", text: "No inputs."}));
    }
    // optional inputs left empty wait behind "more inputs", as in Zapier's editor
    var st = stateOf(owner);
    var more = h("details", {"class": "more-inputs", open: Boolean(st.showMore)});
    var hidden = 0;
    more.addEventListener("toggle", function () { st.showMore = more.open; });
    component.inputs.forEach(function (f) {
      var el = inputField(f, owner, place, scope, component, values[f.name]);
      el.__builder = {place: place, scope: scope, component: component};
      if (f.required || values[f.name] !== undefined) {
        box.appendChild(el);
      } else {
        more.appendChild(el);
        hidden += 1;
      }
    });
    if (hidden) {
      more.insertBefore(h("summary", {text: hidden + " optional input" +
        (hidden === 1 ? "" : "s")}), more.firstChild);
      box.appendChild(more);
    }
    box.appendChild(slot(place + ".inputs", uid("bf")));
    return box;
  }

  /* An action the catalog does not know: its inputs are kept, editable as JSON. */
  function jsonWhole(owner, place) {
    var area = h("textarea", {"class": "code", rows: 6, spellcheck: "false"});
    area.value = JSON.stringify(owner.inputs || {}, null, 2);
    area.addEventListener("input", function () {
      try {
        owner.inputs = JSON.parse(area.value || "{}");
        delete invalid[place + ".inputs"];
        setSlot(area, "");
      } catch (e) {
        invalid[place + ".inputs"] = "Not valid JSON: " + e.message;
        setSlot(area, invalid[place + ".inputs"]);
      }
      markDirty();
    });
    return field("Inputs (JSON)", area, {place: place + ".inputs",
      help: "This step's action is not installed here; its inputs are kept as they are."});
  }

  function setSlot(control, message) {
    var id = (control.getAttribute("aria-describedby") || "").split(" ").pop();
    var el = id && document.getElementById(id);
    if (el) {
      el.textContent = message;
    }
    if (message) {
      control.setAttribute("aria-invalid", "true");
    } else {
      control.removeAttribute("aria-invalid");
    }
  }

  function inputField(f, owner, place, scope, component, value) {
    var st = stateOf(owner);
    var kind = widgetKind(f, value, st.modes[f.name]);
    var where = place + ".inputs." + f.name;
    var control, extra = [];
    if (kind === "json") {
      control = h("textarea", {"class": "code", rows: 3, spellcheck: "false",
                               placeholder: f.type === "List" ? '["a", "b"]' : '{"key": "value"}'});
      control.value = isObject(value) ? JSON.stringify(value, null, 2) : display(value);
      control.addEventListener("input", function () {
        var text = control.value.trim();
        delete invalid[where];
        if (text === "") {
          setInput(owner, f.name, undefined);
          setSlot(control, "");
          return;
        }
        try {
          setInput(owner, f.name, JSON.parse(text));
          setSlot(control, "");
        } catch (e) {
          if (hasTemplate(text)) {
            setInput(owner, f.name, text);
            setSlot(control, "");
          } else {
            invalid[where] = "Not valid JSON: " + e.message;
            setSlot(control, invalid[where]);
          }
        }
      });
    } else if (kind === "choice") {
      var choices = choicesOf(f);
      control = h("select", {}, [h("option", {value: "", text: f.required ? "Choose…" : "(not set)"})]);
      choices.forEach(function (c, i) {
        control.appendChild(h("option", {value: String(i), selected: c === value || (
          value !== undefined && value !== null && String(c) === String(value)),
          text: f.type === "Boolean" ? (c ? "yes (true)" : "no (false)") : String(c)}));
      });
      control.addEventListener("change", function () {
        setInput(owner, f.name, control.value === "" ? undefined : choices[Number(control.value)]);
      });
      extra.push(modeButton(f, owner, "text", "Type", "Type a value or a template instead"));
    } else if (kind === "options") {
      control = optionsSelect(f, owner, component, value, where);
      extra.push(control.__extra);
      extra.push(modeButton(f, owner, "text", "Type", "Type a value or a template instead"));
    } else {
      control = h(/\n/.test(display(value)) ? "textarea" : "input",
                  {type: "text", autocomplete: "off", spellcheck: "false",
                   inputmode: NUMERIC[f.type] ? "decimal" : null});
      control.value = display(value);
      control.addEventListener("input", function () {
        setInput(owner, f.name, parseTyped(control.value, f));
      });
      if (f.secret) {
        control.setAttribute("data-secret", "");
      }
      if (f.choices_from || f.choices || f.type === "Boolean") {
        extra.push(modeButton(f, owner, "list", "List", "Choose from the list instead"));
      }
    }
    control.setAttribute("data-input", f.name);
    if (scope && scope.mapping && (kind === "text" || kind === "json")) {
      extra.push(pickerButton(control, scope, "template", f.label || f.name));
    }
    var help = f.help || "";
    return field(f.label || f.name, control, {required: f.required, help: help || null,
                                              place: where, extra: extra, cls: "input-field"});
  }

  function modeButton(f, owner, mode, text, title) {
    var button = h("button", {type: "button", "class": "small", title: title,
                              "aria-label": title + " (" + (f.label || f.name) + ")",
                              "data-mode": mode, text: text});
    button.addEventListener("click", function () {
      stateOf(owner).modes[f.name] = mode;
      var old = button.closest(".field");
      var ctx = old.__builder;
      var fresh = inputField(f, owner, ctx.place, ctx.scope, ctx.component,
                             inputsOf(owner)[f.name]);
      fresh.__builder = ctx;
      old.replaceWith(fresh);
      var control = fresh.querySelector("[data-input]");
      if (control) {
        control.focus();
      }
    });
    return button;
  }

  // -- dropdowns filled by a search (choices_from) -----------------------------------------

  function optionsSelect(f, owner, component, value, where) {
    var search = searches[f.choices_from];
    var select = h("select", {"data-choices-from": f.choices_from}, [
      h("option", {value: "", text: f.required ? "Choose…" : "(not set)"})]);
    var values = [];
    function fill(list) {
      while (select.options.length > 1) {
        select.remove(1);
      }
      values = [];
      var found = false;
      list.forEach(function (o, i) {
        values.push(o.value);
        var on = value !== undefined && value !== null && String(o.value) === String(value);
        found = found || on;
        select.appendChild(h("option", {value: String(i), selected: on,
                                        text: o.label === String(o.value) ? o.label :
                                          o.label + " — " + o.value}));
      });
      if (!found && value !== undefined && value !== null && value !== "") {
        values.push(value);
        select.appendChild(h("option", {value: String(values.length - 1), selected: true,
                                        text: String(value)}));
      }
    }
    fill([]);
    select.addEventListener("change", function () {
      setInput(owner, f.name, select.value === "" ? undefined : values[Number(select.value)]);
    });
    var refresh = h("button", {type: "button", "class": "small", text: "↻",
                               title: "Load the choices again",
                               "aria-label": "Refresh the choices of " + (f.label || f.name)});
    refresh.addEventListener("click", function () { load(true); });
    select.__extra = refresh;
    function load(fresh) {
      var slotEl = document.getElementById(select.id + "-error");
      var request = optionsRequest(search, owner, component);
      if (request.problem) {
        if (slotEl) {
          slotEl.textContent = request.problem;
        }
        return;
      }
      var key = JSON.stringify(request.body);
      if (fresh || !optionCache[key]) {
        optionCache[key] = C.api("POST", "/options", request.body);
      }
      select.setAttribute("aria-busy", "true");
      optionCache[key].then(function (answer) {
        select.removeAttribute("aria-busy");
        fill(answer.data);
        select.setAttribute("data-loaded", String(answer.data.length));
        if (slotEl) {
          slotEl.textContent = answer.data.length ? "" : "The service has nothing to choose " +
            "from yet; type a value instead.";
        }
      }, function (err) {
        delete optionCache[key];
        select.removeAttribute("aria-busy");
        if (slotEl) {
          slotEl.textContent = "Could not load the choices: " + err.message;
        }
      });
    }
    // the field is in the page once this task runs: its error slot can show problems
    window.setTimeout(function () { load(false); }, 0);
    return select;
  }

  /* The POST /options body for a dropdown, or {problem} saying what to fill in first. */
  function optionsRequest(search, owner, component) {
    if (!search) {
      return {problem: "The search that lists the choices is not installed; type a value."};
    }
    var name = null;
    if (owner.connection && connections.some(function (c) {
      return c.name === owner.connection && c.app === search.app;
    })) {
      name = owner.connection;
    } else {
      var mine = connections.filter(function (c) { return c.app === search.app; });
      if (mine.length === 1) {
        name = mine[0].name;
      } else {
        return {problem: "Choose a " + appLabel(search.app) + " connection to list the choices."};
      }
    }
    var inputs = {}, missing = [];
    var given = isObject(owner.inputs) ? owner.inputs : {};
    search.inputs.forEach(function (f) {
      var v = given[f.name];
      if (v !== undefined && v !== null && v !== "" && !hasTemplate(v)) {
        inputs[f.name] = v;
      } else if (f.required) {
        missing.push(f.label || f.name);
      }
    });
    if (missing.length) {
      return {problem: "Fill in " + missing.join(", ") + " first: the choices depend on it."};
    }
    return {body: {search: search.key, connection: name, inputs: inputs}};
  }

  // -- filters and path conditions ---------------------------------------------------------

  function conditionsOf(spec) {
    if (Array.isArray(spec)) {
      return {mode: "all", list: spec, dict: false};
    }
    if (isObject(spec) && Array.isArray(spec.any)) {
      return {mode: "any", list: spec.any, dict: true};
    }
    if (isObject(spec) && Array.isArray(spec.all)) {
      return {mode: "all", list: spec.all, dict: true};
    }
    return null;
  }

  function parseConditionValue(text, op) {
    var t = text.trim();
    if (op === "in" || op === "not_in") {
      if (/^\[/.test(t)) {
        try {
          var list = JSON.parse(t);
          if (Array.isArray(list)) {
            return list;
          }
        } catch (e) { /* a plain list follows */ }
      }
      return t === "" ? [] : t.split(",").map(function (s) { return s.trim(); });
    }
    if (/^(-?\d+(\.\d+)?|true|false|null)$/.test(t) || /^[[{"]/.test(t)) {
      try {
        return JSON.parse(t);
      } catch (e) { /* text */ }
    }
    return text;
  }

  function showCondition(value) {
    if (value === undefined) {
      return "";
    }
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  /* The editor of ``owner[key]`` (a step's filter, a branch's conditions). */
  function filterEditor(owner, key, place, scope, labels) {
    var box = h("div", {"class": "filter", "data-filter": place});
    var spec = conditionsOf(owner[key]);
    if (owner[key] !== undefined && owner[key] !== null && !spec) {
      box.appendChild(h("p", {"class": "muted small", text: labels.odd}));
      box.appendChild(slot(place, uid("bf")));
      return box;
    }
    if (!spec || !spec.list.length) {
      var add = h("button", {type: "button", "class": "small", text: labels.add});
      add.addEventListener("click", function () {
        owner[key] = [{field: "", op: "equals", value: ""}];
        markDirty();
        renderAll();
      });
      box.appendChild(h("p", {"class": "muted small"}, [labels.none + " ", add]));
      box.appendChild(slot(place, uid("bf")));
      return box;
    }
    var mode = h("select", {"aria-label": "All or any condition"}, [
      h("option", {value: "all", text: "all", selected: spec.mode === "all"}),
      h("option", {value: "any", text: "any", selected: spec.mode === "any"})]);
    mode.addEventListener("change", function () {
      owner[key] = mode.value === "any" ? {any: spec.list} :
        (spec.dict ? {all: spec.list} : spec.list);
      markDirty();
      renderAll();
    });
    box.appendChild(h("p", {"class": "filter-head"}, [labels.lead + " ", mode,
                                                      " of these are true:"]));
    var base = spec.dict ? place + "." + spec.mode : place;
    var rows = h("div", {"class": "conditions"});
    spec.list.forEach(function (cond, i) {
      rows.appendChild(conditionRow(owner, key, spec.list, cond, i, base + "[" + i + "]", scope));
    });
    box.appendChild(rows);
    var more = h("button", {type: "button", "class": "small", text: "+ Add a condition"});
    more.addEventListener("click", function () {
      spec.list.push({field: "", op: "equals", value: ""});
      markDirty();
      renderAll();
    });
    box.appendChild(more);
    box.appendChild(slot(place, uid("bf")));
    return box;
  }

  function conditionRow(owner, key, list, cond, i, place, scope) {
    if (!isObject(cond)) {
      return h("p", {"class": "muted small"}, ["Condition " + (i + 1) + " is kept as it is: ",
                                                h("code", {text: JSON.stringify(cond)})]);
    }
    var fieldInput = h("input", {type: "text", autocomplete: "off", spellcheck: "false",
                                 placeholder: "trigger.amount", "data-condition": "field"});
    fieldInput.value = display(cond.field);
    fieldInput.addEventListener("input", function () {
      cond.field = fieldInput.value;
      markDirty();
    });
    var op = h("select", {"data-condition": "op"});
    var known = false;
    opList.forEach(function (o) {
      known = known || o.op === cond.op;
      op.appendChild(h("option", {value: o.op, text: o.label, selected: o.op === cond.op}));
    });
    if (!known && cond.op !== undefined) {
      op.appendChild(h("option", {value: String(cond.op), text: String(cond.op), selected: true}));
    }
    var valueInput = h("input", {type: "text", autocomplete: "off", spellcheck: "false",
                                 "data-condition": "value", placeholder: "value"});
    valueInput.value = showCondition(cond.value);
    valueInput.addEventListener("input", function () {
      cond.value = parseConditionValue(valueInput.value, cond.op);
      markDirty();
    });
    op.addEventListener("change", function () {
      cond.op = op.value;
      if (ops[cond.op] && ops[cond.op].unary) {
        delete cond.value;
      } else if (cond.value === undefined) {
        cond.value = parseConditionValue(valueInput.value, cond.op);
      } else if ((cond.op === "in" || cond.op === "not_in") && !Array.isArray(cond.value)) {
        cond.value = parseConditionValue(showCondition(cond.value), cond.op);
      }
      markDirty();
      renderAll();
    });
    var remove = h("button", {type: "button", "class": "small danger", text: "✕",
                              "aria-label": "Remove condition " + (i + 1)});
    remove.addEventListener("click", function () {
      list.splice(i, 1);
      if (!list.length) {
        delete owner[key];
      }
      markDirty();
      renderAll();
    });
    var unary = ops[cond.op] && ops[cond.op].unary;
    function mapped(control, mode, what) {
      return scope.mapping ? [pickerButton(control, scope, mode, what)] : [];
    }
    var listOp = cond.op === "in" || cond.op === "not_in";
    var parts = [
      field("Field", fieldInput, {place: place + ".field", cls: "cond-field",
                                  extra: mapped(fieldInput, "path", "the condition's field")}),
      field("Operator", op, {place: place + ".op", cls: "cond-op"})];
    if (!unary) {
      parts.push(field("Value", valueInput, {
        place: place + ".value", cls: "cond-value",
        help: listOp ? "Comma-separated, or a JSON list." : null,
        extra: mapped(valueInput, "template", "the condition's value")}));
    }
    parts.push(remove);
    return h("div", {"class": "condition", "data-index": String(i)}, parts);
  }

  // -- the field picker --------------------------------------------------------------------

  function expression(segs) {
    return segs.map(function (s, i) {
      if (typeof s === "number") {
        return "[" + s + "]";
      }
      if (IDENT.test(s)) {
        return i === 0 ? s : "." + s;
      }
      return "[" + JSON.stringify(s) + "]";
    }).join("");
  }

  function plainPath(segs) {
    var ok = segs.every(function (s) { return typeof s === "number" || (IDENT.test(s)); });
    return ok ? segs.join(".") : null;
  }

  function flatten(value, segs, out, depth) {
    if (out.length >= 400) {
      return out;
    }
    if (Array.isArray(value)) {
      if (value.length && depth < 6) {
        out.push({segs: segs.concat([0]), value: value[0]});
        if (isObject(value[0])) {
          flatten(value[0], segs.concat([0]), out, depth + 1);
        }
      }
      return out;
    }
    if (isObject(value)) {
      Object.keys(value).forEach(function (key) {
        var sub = segs.concat([key]);
        out.push({segs: sub, value: value[key]});
        if (isObject(value[key]) && depth < 6) {
          flatten(value[key], sub, out, depth + 1);
        }
      });
    }
    return out;
  }

  function triggerSample() {
    if (samples.trigger) {
      return {item: samples.trigger, source: "tested"};
    }
    var t = triggers[def.trigger && def.trigger.key];
    return {item: t ? t.sample || {} : {}, source: "catalog sample"};
  }

  function stepSample(step) {
    var tested = samples.steps[step.name];
    if (tested) {
      return {output: tested.output, source: "tested"};
    }
    var a = actions[step.action];
    return {output: a ? a.sample || {} : {}, source: "catalog sample"};
  }

  function loopItem(loopStep) {
    var out = stepSample(loopStep).output || {};
    return Array.isArray(out.items) && out.items.length ? out.items[0] : {};
  }

  function pickerGroups(scope) {
    var groups = [];
    var t = triggerSample();
    var tc = triggers[def.trigger && def.trigger.key];
    groups.push({title: "Trigger: " + (tc ? tc.label : "none chosen") + " (" + t.source + ")",
                 entries: flatten(t.item, ["trigger"], [], 0)});
    if (scope.loop) {
      groups.push({title: "Loop " + scope.loop.name + ": the current item",
                   entries: [{segs: ["item"], value: loopItem(scope.loop)}]
                     .concat(flatten(loopItem(scope.loop), ["item"], [], 0))
                     .concat([{segs: ["index"], value: 0}])});
    }
    scope.visible.forEach(function (step) {
      var s = stepSample(step);
      var a = actions[step.action];
      groups.push({title: "Step " + step.name + ": " + (a ? a.label : step.action) +
                          " (" + s.source + ")",
                   entries: flatten(s.output, ["steps", step.name], [], 0)});
    });
    return groups;
  }

  var picker = {target: null, start: 0, end: 0, mode: "template", anchor: null};

  function pickerButton(control, scope, mode, what) {
    var button = h("button", {type: "button", "class": "small map", text: "{ }",
                              title: "Insert a field from the trigger or an earlier step",
                              "aria-label": "Insert a field into " + what,
                              "aria-haspopup": "dialog", "aria-expanded": "false"});
    button.addEventListener("click", function () {
      openPicker(control, scope, mode, button);
    });
    return button;
  }

  function preview(value) {
    if (isObject(value)) {
      return Array.isArray(value) ? "[…]" : "{…}";
    }
    var text = value === null ? "null" : String(value);
    return text.length > 48 ? text.slice(0, 47) + "…" : text;
  }

  function openPicker(control, scope, mode, button) {
    var box = document.getElementById("b-picker");
    if (picker.anchor === button && !box.hidden) {
      closePicker();
      return;
    }
    closePicker();
    picker.target = control;
    picker.mode = mode;
    picker.anchor = button;
    picker.start = control.selectionStart === undefined || control.selectionStart === null ?
      control.value.length : control.selectionStart;
    picker.end = control.selectionEnd === undefined || control.selectionEnd === null ?
      picker.start : control.selectionEnd;
    var list = document.getElementById("b-picker-list");
    list.textContent = "";
    pickerGroups(scope).forEach(function (group) {
      var section = h("div", {"class": "picker-group", role: "group", "aria-label": group.title},
                      [h("p", {"class": "picker-title", text: group.title})]);
      if (!group.entries.length) {
        section.appendChild(h("p", {"class": "muted small", text: "No fields in its sample."}));
      }
      group.entries.forEach(function (entry) {
        var text = mode === "path" ? (plainPath(entry.segs) ||
          "{{ " + expression(entry.segs) + " }}") : "{{ " + expression(entry.segs) + " }}";
        var item = h("button", {type: "button", "class": "picker-item", role: "option",
                                "data-path": expression(entry.segs), "data-insert": text}, [
          h("span", {"class": "picker-path", text: expression(entry.segs)}),
          h("span", {"class": "picker-value", text: preview(entry.value)})]);
        section.appendChild(item);
      });
      list.appendChild(section);
    });
    box.hidden = false;
    button.setAttribute("aria-expanded", "true");
    var rect = button.getBoundingClientRect();
    var width = Math.min(420, window.innerWidth - 24);
    box.style.width = width + "px";
    box.style.left = Math.max(12, Math.min(rect.right - width, window.innerWidth - width - 12) +
                              window.scrollX) + "px";
    box.style.top = (rect.bottom + window.scrollY + 6) + "px";
    var search = document.getElementById("b-picker-search");
    search.value = "";
    search.focus({preventScroll: true});
    list.scrollTop = 0;
  }

  function closePicker() {
    var box = document.getElementById("b-picker");
    if (!box || box.hidden) {
      return;
    }
    box.hidden = true;
    if (picker.anchor) {
      picker.anchor.setAttribute("aria-expanded", "false");
    }
    picker.anchor = null;
  }

  function choose(item) {
    var control = picker.target;
    var text = item.getAttribute("data-insert");
    var value = control.value;
    control.value = value.slice(0, picker.start) + text + value.slice(picker.end);
    closePicker();
    control.focus();
    var at = picker.start + text.length;
    if (control.setSelectionRange && control.type !== "number") {
      control.setSelectionRange(at, at);
    }
    control.dispatchEvent(new Event("input", {bubbles: true}));
  }

  function initPicker() {
    var box = document.getElementById("b-picker");
    var search = document.getElementById("b-picker-search");
    box.addEventListener("click", function (event) {
      var item = event.target.closest(".picker-item");
      if (item) {
        choose(item);
      } else if (event.target.closest("[data-picker-close]")) {
        var anchor = picker.anchor;
        closePicker();
        if (anchor) {
          anchor.focus();
        }
      }
    });
    search.addEventListener("input", function () {
      var needle = search.value.toLowerCase();
      box.querySelectorAll(".picker-group").forEach(function (group) {
        var shown = 0;
        group.querySelectorAll(".picker-item").forEach(function (item) {
          var on = item.textContent.toLowerCase().indexOf(needle) !== -1;
          item.hidden = !on;
          shown += on ? 1 : 0;
        });
        group.hidden = shown === 0 && needle !== "";
      });
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !box.hidden) {
        var anchor = picker.anchor;
        closePicker();
        if (anchor) {
          anchor.focus();
        }
      }
    });
    document.addEventListener("mousedown", function (event) {
      if (!box.hidden && !box.contains(event.target) && event.target !== picker.anchor) {
        closePicker();
      }
    });
  }

  // -- tests -------------------------------------------------------------------------------

  function resultPanel() {
    return h("div", {"class": "test-panel", role: "status", "aria-live": "polite", hidden: true});
  }

  function showResult(panel, kind, title, value) {
    panel.hidden = false;
    panel.className = "test-panel " + kind;
    panel.textContent = "";
    panel.appendChild(h("p", {"class": "test-title", text: title}));
    if (value !== undefined) {
      panel.appendChild(h("pre", {}, [h("code", {text: JSON.stringify(value, null, 2)})]));
    }
  }

  /* Move "inputs.x" / "connection" of a test's 422 under the trigger's or step's place. */
  function under(place, err) {
    var details = {};
    Object.keys(err.details || {}).forEach(function (key) {
      details[key === "_body" ? key : place + "." + key] = err.details[key];
    });
    return {details: details, message: err.message};
  }

  function serviceError(e) {
    e = e || {};
    var where = [e.status, e.code].filter(function (x) { return x !== null && x !== undefined; })
      .join(" ");
    return "The service refused" + (where ? " (" + where + ")" : "") + ": " + e.message;
  }

  function testTrigger(button, panel, container) {
    var t = def.trigger;
    var body = {connection: t.connection || null, inputs: isObject(t.inputs) ? t.inputs : {}};
    C.clearErrors(container);
    C.busy(button, C.api("POST", "/triggers/" + encodeURIComponent(t.key) + "/test", body))
      .then(function (answer) {
        if (!answer.ok) {
          showResult(panel, "error", serviceError(answer.error));
          return;
        }
        samples.trigger = answer.items[0] || {};
        var note = answer.source === "service" ? "Found " + answer.count + " item" +
          (answer.count === 1 ? "" : "s") + " at the service (nothing was recorded)." :
          (answer.message || "This is the trigger's sample.");
        showResult(panel, "ok", note);
        if (answer.items.length > 1) {
          var choice = h("fieldset", {"class": "sample-choice"}, [
            h("legend", {text: "Keep as the sample"})]);
          var name = uid("sample");
          answer.items.forEach(function (item, i) {
            var radio = h("input", {type: "radio", name: name, value: String(i), checked: i === 0});
            radio.addEventListener("change", function () {
              samples.trigger = answer.items[i];
              pre.firstChild.textContent = JSON.stringify(answer.items[i], null, 2);
            });
            choice.appendChild(h("label", {"class": "check"}, [radio, " Item " + (i + 1) + ": " +
              preview(JSON.stringify(item))]));
          });
          panel.appendChild(choice);
        }
        var pre = h("pre", {}, [h("code", {text: JSON.stringify(samples.trigger, null, 2)})]);
        panel.appendChild(pre);
      }, function (err) {
        if (err.details && Object.keys(err.details).length) {
          placeErrors(container, under("trigger", err));
        }
        showResult(panel, "error", "Not tested: " + err.message);
      });
  }

  function testContext(scope) {
    var steps = {};
    scope.visible.forEach(function (s) { steps[s.name] = stepSample(s).output; });
    var context = {trigger: triggerSample().item, steps: steps};
    if (scope.loop) {
      var items = stepSample(scope.loop).output.items || [];
      context.item = loopItem(scope.loop);
      context.index = 0;
      context.loop = {name: scope.loop.name, index: 0, count: items.length, first: true,
                      last: items.length <= 1};
    }
    return context;
  }

  function testStep(step, place, scope, button, panel, card) {
    var body = {connection: step.connection || null,
                inputs: isObject(step.inputs) ? step.inputs : {}, context: testContext(scope)};
    C.clearErrors(card);
    C.busy(button, C.api("POST", "/actions/" + encodeURIComponent(step.action) + "/test", body))
      .then(function (answer) {
        if (!answer.ok) {
          showResult(panel, "error", serviceError(answer.error));
          return;
        }
        samples.steps[step.name] = {output: answer.output, source: "tested"};
        showResult(panel, "ok", "Tested: later steps map this output.", answer.output);
      }, function (err) {
        if (err.details && Object.keys(err.details).length) {
          placeErrors(card, under(place, err));
        }
        showResult(panel, "error", "Not tested: " + err.message);
      });
  }

  // -- the trigger -------------------------------------------------------------------------

  function renderTrigger() {
    var body = document.getElementById("b-trigger-body");
    body.textContent = "";
    if (!isObject(def.trigger)) {
      def.trigger = {};
    }
    var t = def.trigger;
    var component = triggers[t.key];
    var select = componentSelect(["triggers"], t.key, "Choose a trigger…");
    select.id = "b-trigger-key";
    select.addEventListener("change", function () {
      def.trigger = select.value ? {key: select.value, inputs: {}} : {};
      samples.trigger = null;
      if (triggers[select.value]) {
        autoConnection(def.trigger, triggers[select.value]);
      }
      markDirty();
      renderAll();
      document.getElementById("b-trigger-key").focus();
    });
    body.appendChild(field("Trigger", select, {required: true, place: "trigger.key",
      help: component ? component.help : "What starts a run, grouped by app."}));
    body.appendChild(slot("trigger", uid("bf")));
    if (!t.key) {
      return;
    }
    if (!component) {
      body.appendChild(h("p", {"class": "notice warn", text: "The trigger " + t.key +
        " is not installed here; the flow keeps it as it is."}));
      return;
    }
    var row = h("div", {"class": "fields-row"});
    if (usesConnection(component)) {
      row.appendChild(connectionField(t, component, "trigger"));
    }
    if (component.type === "poll") {
      var every = h("input", {type: "number", min: 5, max: 86400, step: 1, id: "b-poll"});
      every.value = display(t.poll_interval);
      every.addEventListener("input", function () {
        var v = parseTyped(every.value, {type: "Integer"});
        if (v === undefined) {
          delete t.poll_interval;
        } else {
          t.poll_interval = v;
        }
        markDirty();
      });
      row.appendChild(field("Check every (seconds)", every, {place: "trigger.poll_interval",
        help: "How often the service is asked for new items; empty takes the default."}));
    }
    if (row.childNodes.length) {
      body.appendChild(row);
    }
    if (component.inputs.length) {
      body.appendChild(renderInputs(component, t, "trigger", {mapping: false, visible: []}));
    } else {
      body.appendChild(slot("trigger.inputs", uid("bf")));
    }
    if (saved && component.type === "webhook" && data.flow && data.flow.webhook_url) {
      body.appendChild(h("p", {"class": "help"}, ["Webhook URL: ",
        h("code", {"class": "wrap", text: data.flow.webhook_url})]));
    }
    var panel = resultPanel();
    var button = h("button", {type: "button", id: "b-test-trigger", text: "Test trigger"});
    button.addEventListener("click", function () {
      testTrigger(button, panel, document.getElementById("b-trigger"));
    });
    var kind = component.type === "poll" ? "Asks the service for recent items; records nothing." :
      "Shows the trigger's sample item: real ones arrive once the flow is on.";
    body.appendChild(h("div", {"class": "test-row"}, [button, h("span", {"class": "help", text: kind})]));
    body.appendChild(panel);
    if (samples.trigger) {
      showResult(panel, "ok", "The sample kept from the last test:", samples.trigger);
    }
  }

  // -- steps -------------------------------------------------------------------------------

  function allNames(steps, out) {
    (steps || []).forEach(function (s) {
      if (!isObject(s)) {
        return;
      }
      if (s.name) {
        out.push(s.name);
      }
      allNames(s.steps, out);
      (s.branches || []).forEach(function (b) { allNames(b && b.steps, out); });
    });
    return out;
  }

  function defaultName(key, except) {
    var base = String(key).split(".").pop().replace(/\W/g, "_") || "step";
    if (!/^[A-Za-z_]/.test(base)) {
      base = "step_" + base;
    }
    var taken = allNames(def.steps, []).filter(function (n) { return n !== except; });
    var name = base, n = 2;
    while (taken.indexOf(name) !== -1) {
      name = base + "_" + n;
      n += 1;
    }
    return name;
  }

  /* What a step makes visible to the steps after it (a paths step: its branches' steps). */
  function visibleAfter(step) {
    var out = [step];
    if (actions[step.action] && actions[step.action].control === "paths") {
      (step.branches || []).forEach(function (b) {
        (b.steps || []).forEach(function (s) {
          if (isObject(s)) {
            out = out.concat(visibleAfter(s));
          }
        });
      });
    }
    return out;
  }

  /* Rewrite steps.OLD to steps.NEW in every input, filter and condition. */
  function renameRefs(node, from, to) {
    var pattern = new RegExp("\\bsteps\\." + from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "\\b", "g");
    function walk(value) {
      if (typeof value === "string") {
        return value.replace(pattern, "steps." + to);
      }
      if (Array.isArray(value)) {
        return value.map(walk);
      }
      if (isObject(value)) {
        Object.keys(value).forEach(function (k) { value[k] = walk(value[k]); });
      }
      return value;
    }
    (node || []).forEach(function (step) {
      if (!isObject(step)) {
        return;
      }
      ["inputs", "filter"].forEach(function (k) {
        if (step[k] !== undefined) {
          step[k] = walk(step[k]);
        }
      });
      renameRefs(step.steps, from, to);
      (step.branches || []).forEach(function (b) {
        if (isObject(b)) {
          if (b.conditions !== undefined) {
            b.conditions = walk(b.conditions);
          }
          renameRefs(b.steps, from, to);
        }
      });
    });
  }

  function chooseAction(step, key) {
    var before = actions[step.action];
    var after = actions[key];
    if (before && before.control && (!after || after.control !== before.control) &&
        ((step.steps && step.steps.length) || (step.branches && step.branches.length)) &&
        !window.confirm("The steps nested under this one will be removed. Go on?")) {
      return false;
    }
    if (!key) {
      delete step.action;
      return true;
    }
    step.action = key;
    if (after) {
      var names = after.inputs.map(function (f) { return f.name; });
      Object.keys(inputsOf(step)).forEach(function (k) {
        if (names.indexOf(k) === -1) {
          delete step.inputs[k];
        }
      });
      if (!before || before.app !== after.app || !usesConnection(after)) {
        delete step.connection;
      }
      autoConnection(step, after);
      if (after.control === "loop") {
        delete step.branches;
        step.steps = Array.isArray(step.steps) ? step.steps : [];
      } else if (after.control === "paths") {
        delete step.steps;
        step.branches = Array.isArray(step.branches) && step.branches.length ? step.branches :
          [{name: "path_a", steps: []}];
      } else {
        delete step.steps;
        delete step.branches;
      }
    }
    if (!step.name) {
      step.name = defaultName(key, step.name);
    }
    delete samples.steps[step.name];
    return true;
  }

  function renderStepList(list, place, scope, number) {
    var box = h("div", {"class": "step-list-box"});
    var ol = h("ol", {"class": "step-list"});
    var visible = scope.visible.slice();
    list.forEach(function (step, i) {
      var here = place + "[" + i + "]";
      var label = number ? number + "." + (i + 1) : String(i + 2);
      if (!isObject(step)) {
        ol.appendChild(h("li", {"class": "card step-card"}, [h("p", {"class": "muted",
          text: "Step " + label + " is kept as it is: " + JSON.stringify(step)})]));
        return;
      }
      var stepScope = {mapping: true, visible: visible.slice(), loop: scope.loop};
      ol.appendChild(renderStep(step, list, i, here, stepScope, label));
      visible = visible.concat(visibleAfter(step));
    });
    box.appendChild(ol);
    var add = h("button", {type: "button", "class": "add-step", "data-add-step": place,
                           text: list.length ? "+ Add a step" : "+ Add the first step"});
    add.addEventListener("click", function () {
      list.push({inputs: {}});
      markDirty();
      renderAll();
      var cards = document.querySelectorAll('[data-step-list="' + place + '"] > li');
      var last = cards[cards.length - 1];
      if (last) {
        last.querySelector("select").focus();
      }
    });
    ol.setAttribute("data-step-list", place);
    box.appendChild(add);
    box.appendChild(slot(place, uid("bf")));
    return box;
  }

  function toolButton(text, label, onClick, disabled) {
    var b = h("button", {type: "button", "class": "small", text: text, "aria-label": label,
                         title: label, disabled: disabled});
    b.addEventListener("click", onClick);
    return b;
  }

  function renderStep(step, list, i, place, scope, label) {
    var component = actions[step.action];
    var card = h("li", {"class": "card step-card", "data-step": place,
                        "data-step-name": step.name || ""});
    var title = component ? component.label : (step.action ? step.action : "Choose an action");
    var head = h("div", {"class": "step-head"}, [
      h("h3", {}, [h("span", {"class": "step-num", "aria-hidden": "true", text: label}),
                   h("span", {"class": "step-title", text: title}),
                   step.name ? h("code", {text: "steps." + step.name}) : null,
                   component ? h("span", {"class": "badge", text: appLabel(component.app)}) : null]),
      h("div", {"class": "step-tools"}, [
        toolButton("↑", "Move step " + label + " up", function () {
          list.splice(i - 1, 0, list.splice(i, 1)[0]);
          markDirty();
          renderAll();
        }, i === 0),
        toolButton("↓", "Move step " + label + " down", function () {
          list.splice(i + 1, 0, list.splice(i, 1)[0]);
          markDirty();
          renderAll();
        }, i === list.length - 1),
        toolButton("✕", "Remove step " + label, function () {
          if (!window.confirm("Remove step " + label + (step.name ? " (" + step.name + ")" : "") + "?")) {
            return;
          }
          list.splice(i, 1);
          markDirty();
          renderAll();
        })])]);
    card.appendChild(head);

    var select = componentSelect(["actions", "searches"], step.action, "Choose an action…");
    select.setAttribute("data-step-action", place);
    select.addEventListener("change", function () {
      if (chooseAction(step, select.value)) {
        markDirty();
      }
      renderAll();
    });
    var nameInput = h("input", {type: "text", autocomplete: "off", spellcheck: "false",
                                "data-step-name-input": place, placeholder: "e.g. contact"});
    nameInput.value = step.name || "";
    nameInput.addEventListener("change", function () {
      var from = step.name, to = nameInput.value.trim();
      if (to) {
        step.name = to;
      } else {
        delete step.name;
      }
      if (from && to && from !== to) {
        renameRefs(def.steps, from, to);
        if (samples.steps[from]) {
          samples.steps[to] = samples.steps[from];
          delete samples.steps[from];
        }
      }
      markDirty();
      renderAll();
    });
    card.appendChild(h("div", {"class": "fields-row"}, [
      field("Action", select, {required: true, place: place + ".action",
                               help: component ? component.help : "What this step does, grouped by app."}),
      field("Step name", nameInput, {place: place + ".name",
        help: "How later steps refer to its output: steps." + (step.name || "NAME")})]));
    if (step.action && !component) {
      card.appendChild(h("p", {"class": "notice warn", text: "The action " + step.action +
        " is not installed here; the step is kept as it is."}));
    }
    if (!step.action) {
      card.appendChild(slot(place + ".inputs", uid("bf")));
      return card;
    }
    if (component && usesConnection(component)) {
      card.appendChild(connectionField(step, component, place));
    } else if (step.connection) {
      card.appendChild(h("p", {"class": "help", text: "Connection: " + step.connection}));
      card.appendChild(slot(place + ".connection", uid("bf")));
    }
    var inputs = h("fieldset", {"class": "step-inputs"}, [h("legend", {text: "Inputs"})]);
    inputs.appendChild(renderInputs(component, step, place, scope));
    card.appendChild(inputs);

    var filterBox = h("div", {"class": "step-filter"}, [h("h4", {text: "Filter"})]);
    filterBox.appendChild(filterEditor(step, "filter", place + ".filter", scope, {
      none: "Runs every time.", add: "+ Only continue if…", lead: "Only continue if",
      odd: "This step's filter is kept as it is (the builder cannot show its form)."}));
    card.appendChild(filterBox);

    if (component && !component.control) {
      var panel = resultPanel();
      var test = h("button", {type: "button", "data-test-step": place, text: "Test step"});
      test.addEventListener("click", function () {
        testStep(step, place, scope, test, panel, card);
      });
      card.appendChild(h("div", {"class": "test-row"}, [test, h("span", {"class": "help",
        text: "Runs it for real at the service, with the trigger's sample and earlier steps' outputs."})]));
      card.appendChild(panel);
      if (samples.steps[step.name]) {
        showResult(panel, "ok", "Tested: later steps map this output.",
                   samples.steps[step.name].output);
      }
    }
    if (component && component.control === "loop") {
      card.appendChild(h("div", {"class": "nested"}, [
        h("p", {"class": "nested-title", text: "For each item, run these steps (they see {{ item }}):"}),
        renderStepList(Array.isArray(step.steps) ? step.steps : (step.steps = []), place + ".steps",
                       {visible: scope.visible.concat([step]), loop: step}, label)]));
    } else if (component && component.control === "paths") {
      card.appendChild(renderBranches(step, place, scope, label));
    } else if (step.steps || step.branches) {
      card.appendChild(h("p", {"class": "notice warn", text: "Nested steps are kept as they are."}));
      card.appendChild(slot(place + (step.steps ? ".steps" : ".branches"), uid("bf")));
    }
    return card;
  }

  function renderBranches(step, place, scope, label) {
    var box = h("div", {"class": "nested"}, [h("p", {"class": "nested-title",
      text: "Paths: each path whose conditions hold runs its steps."})]);
    if (!Array.isArray(step.branches)) {
      step.branches = [];
    }
    step.branches.forEach(function (branch, j) {
      var bplace = place + ".branches[" + j + "]";
      if (!isObject(branch)) {
        box.appendChild(h("p", {"class": "muted", text: "A path kept as it is."}));
        return;
      }
      var nameInput = h("input", {type: "text", autocomplete: "off", "data-branch-name": bplace});
      nameInput.value = branch.name || "";
      nameInput.addEventListener("input", function () {
        branch.name = nameInput.value.trim();
        markDirty();
      });
      var remove = toolButton("✕", "Remove path " + (branch.name || j + 1), function () {
        if (!window.confirm("Remove the path " + (branch.name || j + 1) + " and its steps?")) {
          return;
        }
        step.branches.splice(j, 1);
        markDirty();
        renderAll();
      });
      var inner = {mapping: true, visible: scope.visible.concat([step]), loop: scope.loop};
      box.appendChild(h("div", {"class": "branch", "data-branch": bplace}, [
        h("div", {"class": "branch-head"}, [
          field("Path name", nameInput, {place: bplace + ".name", cls: "branch-name"}), remove]),
        filterEditor(branch, "conditions", bplace + ".conditions", inner, {
          none: "Always runs.", add: "+ Only when…", lead: "Runs when",
          odd: "These conditions are kept as they are."}),
        renderStepList(Array.isArray(branch.steps) ? branch.steps : (branch.steps = []),
                       bplace + ".steps", inner, label + "." + String.fromCharCode(97 + (j % 26)))]));
    });
    var add = h("button", {type: "button", "class": "small", text: "+ Add a path"});
    add.addEventListener("click", function () {
      var names = step.branches.map(function (b) { return b && b.name; });
      var n = step.branches.length, name;
      do {
        name = "path_" + String.fromCharCode(97 + (n % 26)) + (n >= 26 ? n : "");
        n += 1;
      } while (names.indexOf(name) !== -1);
      step.branches.push({name: name, steps: []});
      markDirty();
      renderAll();
    });
    box.appendChild(add);
    box.appendChild(slot(place + ".branches", uid("bf")));
    return box;
  }

  // -- the page ----------------------------------------------------------------------------

  function renderExtra() {
    var notes = [];
    var of = def.on_failure;
    if (isObject(of) && of.pause_after) {
      notes.push("pause after " + of.pause_after + " failed runs in a row");
    }
    if (isObject(of) && of.error_flow) {
      notes.push("error flow " + of.error_flow);
    }
    if (def.concurrency) {
      notes.push("at most " + def.concurrency + " runs at once");
    }
    var known = {name: 1, description: 1, trigger: 1, steps: 1, on_failure: 1, concurrency: 1,
                 enabled: 1};
    Object.keys(def).forEach(function (k) {
      if (!known[k]) {
        notes.push(k);
      }
    });
    var el = document.getElementById("b-extra");
    el.hidden = !notes.length;
    el.textContent = notes.length ? "Kept as they are: " + notes.join("; ") +
      (saved ? " (the flow's page changes the failure settings)." : ".") : "";
  }

  function renderAll() {
    closePicker();
    renderTrigger();
    var steps = document.getElementById("b-steps");
    steps.textContent = "";
    if (!Array.isArray(def.steps)) {
      def.steps = [];
    }
    steps.appendChild(h("h2", {"class": "section", text: "Then do this"}));
    steps.appendChild(renderStepList(def.steps, "steps", {mapping: true, visible: [], loop: null}, ""));
    renderExtra();
    Object.keys(invalid).forEach(function (place) {
      var el = slotFor(form, place);
      if (el) {
        el.textContent = invalid[place];
      } else {
        delete invalid[place];  // its field is gone
      }
    });
  }

  function slotFor(container, place) {
    var all = container.querySelectorAll("[data-error-for]");
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-error-for") === place) {
        return all[i];
      }
    }
    return null;
  }

  /* showErrors, with each place the page has no slot for moved to its nearest parent's. */
  function placeErrors(container, err) {
    var details = {};
    Object.keys(err.details || {}).forEach(function (place) {
      var target = place, rest = "";
      while (target && target !== "_body" && !slotFor(container, target)) {
        var m = /^(.*?)(\.[^.[\]]+|\[\d+\])$/.exec(target);
        if (!m || !m[1]) {
          target = null;
          break;
        }
        rest = m[2] + rest;
        target = m[1];
      }
      var messages = [].concat(err.details[place]);
      if (target && rest) {
        messages = messages.map(function (msg) { return rest.replace(/^\./, "") + ": " + msg; });
      }
      var key = target || place;
      details[key] = (details[key] || []).concat(messages);
    });
    container.querySelectorAll("details.more-inputs").forEach(function (more) {
      Object.keys(details).forEach(function (key) {
        if (!more.open && slotFor(more, key)) {
          more.open = true;  // the field named is among the optional ones
        }
      });
    });
    C.showErrors(container, {details: details, message: err.message});
  }

  function payload() {
    var body = clone(def);
    body.name = document.getElementById("b-name").value.trim();
    var description = document.getElementById("b-description").value.trim();
    if (description) {
      body.description = description;
    } else {
      delete body.description;
    }
    delete body.enabled;
    return body;
  }

  function setState(flow) {
    enabled = flow.enabled;
    var state = document.getElementById("b-state");
    state.textContent = "";
    state.appendChild(flow.paused_reason ? h("span", {"class": "badge state-paused",
      title: flow.paused_reason, text: "paused"}) : h("span", {"class": "badge " +
      (enabled ? "state-on" : "state-off"), text: enabled ? "on" : "off"}));
    var button = document.getElementById("b-switch");
    button.hidden = false;
    button.textContent = enabled ? "Switch off" : "Switch on";
    button.className = enabled ? "" : "primary-outline";
  }

  function save() {
    if (Object.keys(invalid).length) {
      var err = {details: clone(invalid), message: "Some fields are not valid."};
      placeErrors(form, err);
      return Promise.reject(err);
    }
    var body = payload();
    var request = saved ? C.api("PUT", "/flows/" + encodeURIComponent(flowName), body) :
      C.api("POST", "/flows", body);
    return request.then(function (flow) {
      var first = !saved;
      saved = true;
      flowName = flow.name;
      data.flow = {name: flow.name, enabled: flow.enabled, paused_reason: flow.paused_reason,
                   webhook_url: flow.webhook_url, definition: flow.definition};
      markClean();
      C.clearErrors(form);
      setState(flow);
      if (first) {
        var nameInput = document.getElementById("b-name");
        nameInput.readOnly = true;
        document.getElementById("b-title").textContent = "Edit " + flow.name;
        document.title = "Edit " + flow.name + " · connector";
        window.history.replaceState(null, "", form.getAttribute("data-flow-url") +
          encodeURIComponent(flow.name) + "/edit");
        var crumbs = document.querySelector(".crumbs");
        crumbs.appendChild(document.createTextNode(" "));
        crumbs.appendChild(h("a", {id: "b-view", href: form.getAttribute("data-flow-url") +
          encodeURIComponent(flow.name), text: flow.name}));
        crumbs.appendChild(document.createTextNode(" /"));
        renderTrigger();  // the webhook URL is known now
      }
      return flow;
    }, function (err) {
      if (err.status === 409 && !saved && (!err.details || !Object.keys(err.details).length)) {
        err.details = {name: [err.message]};
      }
      throw err;
    });
  }

  function showSaveError(err) {
    placeErrors(form, err);
    var rest = form.querySelector(".form-error");
    C.flash(rest && rest.textContent ? rest.textContent :
      "Not saved: fix the fields marked in red.", "error", true);
  }

  function onSubmit(event) {
    event.preventDefault();
    event.stopPropagation();
    var buttons = [document.getElementById("b-save"), form.querySelector(".builder-foot button")];
    buttons.forEach(function (b) { b.disabled = true; });
    save().then(function (flow) {
      C.flash("Flow " + flow.name + " saved." + (flow.enabled ?
        " It is on: new runs use this version." : " Switch it on to run it."), "ok", true);
    }, showSaveError).then(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  function onSwitch() {
    var button = document.getElementById("b-switch");
    var on = !enabled;
    var ready = dirty ? save() : Promise.resolve();
    C.busy(button, ready.then(function () {
      return C.api("POST", "/flows/" + encodeURIComponent(flowName) + (on ? "/enable" : "/disable"));
    })).then(function (answer) {
      setState(answer);
      var notes = (answer.warnings || []).slice();
      Object.keys(answer.setup || {}).forEach(function (key) {
        notes.push("Paste into the sender: " + key + " = " + answer.setup[key]);
      });
      C.flash("Flow " + flowName + " switched " + (on ? "on" : "off") + "." +
        (notes.length ? " " + notes.join(" ") : ""), notes.length ? "warn" : "ok", true);
    }, function (err) {
      if (err.details && Object.keys(err.details).length) {
        showSaveError(err);
      } else {
        C.flash("Could not switch " + flowName + " " + (on ? "on" : "off") + ": " +
                err.message, "error", true);
      }
    });
  }

  function init() {
    form = document.getElementById("builder");
    var block = document.getElementById("builder-data");
    if (!form || !block) {
      return;
    }
    data = JSON.parse(block.textContent);
    indexCatalog();
    if (data.flow) {
      def = clone(data.flow.definition);
      saved = true;
      flowName = data.flow.name;
      enabled = data.flow.enabled;
    } else {
      def = {name: "", trigger: {}, steps: [{inputs: {}}]};
    }
    document.getElementById("b-description").value = def.description || "";
    ["b-name", "b-description"].forEach(function (id) {
      document.getElementById(id).addEventListener("input", markDirty);
    });
    form.addEventListener("submit", onSubmit);
    document.getElementById("b-switch").addEventListener("click", onSwitch);
    window.addEventListener("beforeunload", function (event) {
      if (dirty) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
    initPicker();
    renderAll();
    form.setAttribute("data-ready", "true");
  }

  // the page's API for tests and for people poking at it in the console
  window.connector.builder = {
    definition: function () { return payload(); },
    samples: function () { return clone(samples); }
  };

  document.addEventListener("DOMContentLoaded", init);
}());
