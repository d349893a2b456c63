/* The flow builder's input fields: text, JSON, choices, and dropdowns a search fills. */
(function () {
  "use strict";

  var C = window.connector;
  var B = C.builderParts;
  var h = B.h, uid = B.uid, field = B.field, slot = B.slot, isObject = B.isObject;
  var hasTemplate = B.hasTemplate, stateOf = B.stateOf, inputsOf = B.inputsOf;
  var markDirty = B.markDirty, appLabel = B.appLabel, pickerButton = B.pickerButton;
  var state = B.state, searches = B.searches, invalid = B.invalid;
  var NUMERIC = {Integer: true, Float: true, Decimal: true, Number: true};
  var JSONISH = {Dict: true, Nested: true, List: true, Tuple: true};
  var optionCache = {};

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
    if (owner.connection && state.connections.some(function (c) {
      return c.name === owner.connection && c.app === search.app;
    })) {
      name = owner.connection;
    } else {
      var mine = state.connections.filter(function (c) { return c.app === search.app; });
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

  B.renderInputs = renderInputs;
  B.display = display;
  B.parseTyped = parseTyped;
}());
