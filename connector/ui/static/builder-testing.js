/* The flow builder's Test trigger and Test step: the API calls and their result panels. */
(function () {
  "use strict";

  var C = window.connector;
  var B = C.builderParts;
  var h = B.h, uid = B.uid, isObject = B.isObject, preview = B.preview;
  var triggerSample = B.triggerSample, stepSample = B.stepSample, loopItem = B.loopItem;
  var state = B.state, samples = B.samples;

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
    var t = state.def.trigger;
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
          B.placeErrors(container, under("trigger", err));
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
          B.placeErrors(card, under(place, err));
        }
        showResult(panel, "error", "Not tested: " + err.message);
      });
  }

  B.resultPanel = resultPanel;
  B.showResult = showResult;
  B.testTrigger = testTrigger;
  B.testStep = testStep;
}());
