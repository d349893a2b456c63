/* The flow builder's field picker: the samples' fields, inserted as {{ ... }} at the cursor. */
(function () {
  "use strict";

  var B = window.connector.builderParts;
  var h = B.h, isObject = B.isObject;
  var state = B.state, triggers = B.triggers, actions = B.actions, samples = B.samples;
  var IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

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
    var t = triggers[state.def.trigger && state.def.trigger.key];
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
    var tc = triggers[state.def.trigger && state.def.trigger.key];
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

  B.triggerSample = triggerSample;
  B.stepSample = stepSample;
  B.loopItem = loopItem;
  B.pickerButton = pickerButton;
  B.preview = preview;
  B.closePicker = closePicker;
  B.initPicker = initPicker;
}());
