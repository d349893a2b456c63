/* The flow builder's step cards: the action, inputs, filter, test, and nested loops and paths. */
(function () {
  "use strict";

  var B = window.connector.builderParts;
  var h = B.h, uid = B.uid, field = B.field, slot = B.slot, isObject = B.isObject;
  var markDirty = B.markDirty, inputsOf = B.inputsOf, appLabel = B.appLabel;
  var componentSelect = B.componentSelect, usesConnection = B.usesConnection;
  var autoConnection = B.autoConnection, connectionField = B.connectionField;
  var renderInputs = B.renderInputs, filterEditor = B.filterEditor;
  var resultPanel = B.resultPanel, showResult = B.showResult, testStep = B.testStep;
  var state = B.state, actions = B.actions, samples = B.samples;

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
    var taken = allNames(state.def.steps, []).filter(function (n) { return n !== except; });
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
      B.renderAll();
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
          B.renderAll();
        }, i === 0),
        toolButton("↓", "Move step " + label + " down", function () {
          list.splice(i + 1, 0, list.splice(i, 1)[0]);
          markDirty();
          B.renderAll();
        }, i === list.length - 1),
        toolButton("✕", "Remove step " + label, function () {
          if (!window.confirm("Remove step " + label + (step.name ? " (" + step.name + ")" : "") + "?")) {
            return;
          }
          list.splice(i, 1);
          markDirty();
          B.renderAll();
        })])]);
    card.appendChild(head);

    var select = componentSelect(["actions", "searches"], step.action, "Choose an action…");
    select.setAttribute("data-step-action", place);
    select.addEventListener("change", function () {
      if (chooseAction(step, select.value)) {
        markDirty();
      }
      B.renderAll();
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
        renameRefs(state.def.steps, from, to);
        if (samples.steps[from]) {
          samples.steps[to] = samples.steps[from];
          delete samples.steps[from];
        }
      }
      markDirty();
      B.renderAll();
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
        B.renderAll();
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
      B.renderAll();
    });
    box.appendChild(add);
    box.appendChild(slot(place + ".branches", uid("bf")));
    return box;
  }

  B.renderStepList = renderStepList;
}());
