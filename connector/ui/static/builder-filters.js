/* The flow builder's condition editor: a step's filter and a path's conditions. */
(function () {
  "use strict";

  var B = window.connector.builderParts;
  var h = B.h, uid = B.uid, field = B.field, slot = B.slot, isObject = B.isObject;
  var markDirty = B.markDirty, display = B.display, pickerButton = B.pickerButton;
  var ops = B.ops, opList = B.opList;

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
        B.renderAll();
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
      B.renderAll();
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
      B.renderAll();
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
      B.renderAll();
    });
    var remove = h("button", {type: "button", "class": "small danger", text: "✕",
                              "aria-label": "Remove condition " + (i + 1)});
    remove.addEventListener("click", function () {
      list.splice(i, 1);
      if (!list.length) {
        delete owner[key];
      }
      markDirty();
      B.renderAll();
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

  B.filterEditor = filterEditor;
}());
